"""Every shipped ruleset validates, and every test case written in it passes (tests as data)."""
import pytest

from engine.loader import load_ruleset, ruleset_files
from engine.runtime import Engine
from engine.testing import run_case
from tests.helpers import ROOT

FILES = ruleset_files([ROOT / "rules", ROOT / "examples" / "rulesets"])
RULESETS = [load_ruleset(path) for path in FILES]
CASES = [(ruleset, case) for ruleset in RULESETS for case in ruleset.tests]
ENGINE = Engine()


def test_shipped_rulesets_are_found():
    assert {r.ref for r in RULESETS} >= {"hetrombopag@1.0.0", "demo-dosing@1.0.0"}


@pytest.mark.parametrize("ruleset,case", CASES, ids=[f"{r.ref}: {c['name']}" for r, c in CASES])
def test_case(ruleset, case):
    result = run_case(ruleset, case, ENGINE)
    assert result.passed, "\n".join(result.differences)


TOPICS_1_0_0 = {"eligibility-met", "eligibility-not-met", "eligibility-incomplete", "start-dose", "start-too-early",
                "dose-above-max", "dose-mismatch", "titration-increase", "titration-maintain", "stop-platelets",
                "stop-duration", "liver-safety", "data-missing"}
HETROMBOPAG_TOPICS = {"1.0.0": TOPICS_1_0_0, "1.0.1": TOPICS_1_0_0 | {"liver-monitoring"}}


@pytest.mark.parametrize("ruleset", [r for r in RULESETS if r.id == "hetrombopag"], ids=lambda r: r.ref)
def test_every_hetrombopag_topic_is_covered_by_a_test(ruleset):
    topics = {rule.decide.topic for rule in ruleset.rules if rule.decide}
    tested = {d["topic"] for case in ruleset.tests for d in case["expect"].get("decisions", [])}
    assert topics == tested
    if ruleset.version in HETROMBOPAG_TOPICS:
        assert topics == HETROMBOPAG_TOPICS[ruleset.version]
