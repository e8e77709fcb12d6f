"""Card texts are capped (engine/templates.py TEXT_LIMIT): a template that would render past the cap is stopped with
an error naming the rule, before the text is built; long data is cut where it is inserted, so it never fails a card."""
from __future__ import annotations

import re

import pytest

from engine.errors import EvaluationError
from engine.loader import load_ruleset
from engine.runtime import Engine
from engine.templates import TEXT_LIMIT, VALUE_LIMIT
from tests.conftest import TODAY, patient_record
from tests.helpers import DEMO, demo_text, edited
from tests.hook_calls import patient_view_with_prefetch

pytestmark = pytest.mark.timeout(60)

CONTRAINDICATED = {"allergy": True, "weight_kg": 30, "weight_date": "2026-03-09"}  # the not-started card


def demo_with(old: str, new: str):
    return load_ruleset(DEMO, text=edited(demo_text(), old, new))


def test_a_detail_that_renders_past_the_cap_is_stopped():
    ruleset = demo_with("{% for reason in contraindications %}", "{% for reason in contraindications * 5000 %}")
    with pytest.raises(EvaluationError, match=rf"rule 'not-started': the text .* renders more than "
                                              rf"{TEXT_LIMIT:,} characters; card texts are capped"):
        Engine().evaluate(ruleset, CONTRAINDICATED, "2026-03-10")


def test_an_appended_line_that_renders_past_the_cap_is_stopped():
    ruleset = demo_with('"Documented allergy to {{ ruleset.title }} drug."',
                        '"{% for c in ruleset.title * 100 %}{{ ruleset.title }}{% endfor %}"')
    with pytest.raises(EvaluationError, match=r"rule 'allergy-recorded': the text .* renders more than"):
        Engine().evaluate(ruleset, CONTRAINDICATED, "2026-03-10")


@pytest.mark.parametrize("expression", ["'x' * 100000000", "[ruleset.title] * 100000000", "10 ** 100000000"])
def test_one_step_that_would_build_past_the_cap_is_refused_before_it_runs(expression):
    ruleset = demo_with('summary: "Demodrug not recommended"', f'summary: "{{{{ {expression} }}}}"')
    with pytest.raises(EvaluationError, match=rf"rule 'not-started': '\*+' would build more than {TEXT_LIMIT:,}"):
        Engine().evaluate(ruleset, CONTRAINDICATED, "2026-03-10")


def test_a_long_unit_is_cut_in_the_card_which_is_still_answered(client, fhir, app):
    record = patient_record(TODAY)
    for resource in record:
        if resource["resourceType"] == "Observation" and resource["id"].startswith("plt"):
            resource["valueQuantity"].update(unit="u" * 200_000, code="u" * 200_000)
    fhir.reset(record)
    status, answer = patient_view_with_prefetch(app, fhir)
    assert status == 200
    (card,) = answer["cards"]
    assert re.search(r"Platelet count: unit 'u{400,}…", card["detail"])  # the reason, cut
    assert len(card["detail"]) < 2 * VALUE_LIMIT
