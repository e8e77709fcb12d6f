"""Every shipped ruleset validates, and every test case written in it passes (tests as data)."""
import pytest

from engine.decide import decide
from engine.loader import load_ruleset, ruleset_files
from engine.runtime import Engine
from engine.templates import format_number
from engine.testing import case_facts, run_case
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
HETROMBOPAG_TOPICS = {"1.0.0": TOPICS_1_0_0, "1.0.1": TOPICS_1_0_0 | {"liver-monitoring"},
                      "1.1.0": TOPICS_1_0_0 | {"liver-monitoring"}}


@pytest.mark.parametrize("ruleset", [r for r in RULESETS if r.id == "hetrombopag"], ids=lambda r: r.ref)
def test_every_hetrombopag_topic_is_covered_by_a_test(ruleset):
    topics = {rule.decide.topic for rule in ruleset.rules if rule.decide}
    tested = {d["topic"] for case in ruleset.tests for d in case["expect"].get("decisions", [])}
    assert topics == tested
    if ruleset.version in HETROMBOPAG_TOPICS:
        assert topics == HETROMBOPAG_TOPICS[ruleset.version]


# Versions held to the card contract: every summary names the drug and, where one is known, a dose.
CARD_CONTRACT = {"hetrombopag@1.0.1", "hetrombopag@1.1.0"}
SUMMARY_LIMIT = 139  # CDS Hooks: under 140 characters; the cards layer cuts a longer one


def known_doses(facts: dict, decision) -> set[str]:
    """The doses a summary may name: the current one on therapy, the draft's, the one suggested."""
    doses = {facts.get("current_daily_dose_mg"), facts.get("draft_daily_dose_mg")}
    doses.add(decision.suggestion.daily_dose if decision.suggestion else None)
    return {f"{format_number(d)} mg" for d in doses if isinstance(d, (int, float)) and not isinstance(d, bool)}


@pytest.mark.parametrize("ref", sorted(CARD_CONTRACT))
def test_every_summary_names_the_drug_and_a_known_dose(ref):
    ruleset = next(r for r in RULESETS if r.ref == ref)
    problems = []
    for case in ruleset.tests:
        evaluation = decide(ENGINE, ruleset, case_facts(ruleset, case), str(case["date"]), case.get("hook"))
        for decision in evaluation.decisions:
            where = f"{case['name']}: {decision.topic}: {decision.summary!r}"
            doses = known_doses(evaluation.facts, decision)
            if "hetrombopag" not in decision.summary.lower():
                problems.append(f"{where} does not name the drug")
            if doses and not any(dose in decision.summary for dose in doses):
                problems.append(f"{where} names none of {sorted(doses)}")
            if len(decision.summary) > SUMMARY_LIMIT:
                problems.append(f"{where} has {len(decision.summary)} characters")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("ref", sorted(CARD_CONTRACT))
def test_card_texts_write_the_platelet_unit_with_a_superscript(ref):
    """EHRs show `10^9` literally; texts write x 10⁹/L (unit fields keep their ASCII codes)."""
    ruleset = next(r for r in RULESETS if r.ref == ref)
    assert "x 10^9" not in ruleset.source_text
    seen = False
    for case in ruleset.tests:
        evaluation = decide(ENGINE, ruleset, case_facts(ruleset, case), str(case["date"]), case.get("hook"))
        for decision in evaluation.decisions:
            texts = [decision.summary, decision.detail, decision.suggestion.label if decision.suggestion else ""]
            assert not [t for t in texts if "10^9" in t], (case["name"], decision.topic)
            seen = seen or any("x 10⁹/L" in t for t in texts)
    assert seen



@pytest.mark.parametrize("ref", sorted(CARD_CONTRACT))
def test_a_dose_change_shows_the_values_it_was_decided_on(ref):
    """A card that changes an order's dose has a basis: the deciding rule compares a measured value itself."""
    ruleset = next(r for r in RULESETS if r.ref == ref)
    seen = set()
    for case in ruleset.tests:
        evaluation = decide(ENGINE, ruleset, case_facts(ruleset, case), str(case["date"]), case.get("hook"))
        firings = {f.rule_id: f for f in evaluation.trace}
        for decision in evaluation.decisions:
            if decision.suggestion and decision.suggestion.action == "update":
                measured = [c for c in firings[decision.rule_id].comparisons
                            if isinstance(c.actual, (int, float)) and not isinstance(c.actual, bool)]
                assert measured, (case["name"], decision.topic)
                seen.add(decision.topic)
    assert seen == {"titration-increase", "dose-mismatch"}
