"""Card texts are compiled when a version is registered, not by the first call whose evaluation reaches them."""
from __future__ import annotations

import uuid

from engine import templates
from engine.loader import load_ruleset
from engine.runtime import Engine
from tests.helpers import DEMO, demo_cases, demo_text, edited


def test_an_evaluation_compiles_no_text_once_its_version_is_registered():
    # A summary of its own: a version this process has not registered, whose texts no earlier test compiled.
    text = edited(demo_text(), '"Demodrug not recommended"', f'"Demodrug not recommended ({uuid.uuid4().hex})"')
    ruleset, engine = load_ruleset(DEMO, text), Engine()
    engine.register(ruleset)
    compiled, read = templates._compiled.cache_info().misses, templates._template_names.cache_info().misses
    fired = set()
    for facts in demo_cases():
        fired |= set(engine.evaluate(ruleset, facts, "2026-03-10").fired_rules)
    assert {rule.id for rule in ruleset.rules if rule.decide} <= fired, "every decision's texts were rendered"
    assert templates._compiled.cache_info().misses == compiled
    assert templates._template_names.cache_info().misses == read
