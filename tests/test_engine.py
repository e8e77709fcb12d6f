"""The real durable-rules engine under the hazards its field notes measured."""
import threading
from dataclasses import asdict

import pytest

from engine.errors import EvaluationError
from engine.loader import load_ruleset
from engine.runtime import Engine
from engine.testing import run_tests
from tests.helpers import DEMO, demo_cases, demo_text, edited

DEMO_RULESET = load_ruleset(DEMO)


@pytest.mark.parametrize("case", DEMO_RULESET.tests, ids=lambda c: c["name"])
def test_demo_cases(case):
    (result,) = [r for r in run_tests(DEMO_RULESET) if r.name == case["name"]]
    assert result.passed, result.differences


def outcome(engine, facts):
    evaluation = engine.evaluate(DEMO_RULESET, facts, "2026-03-10")
    return asdict(evaluation)


def test_trace_names_rule_values_and_thresholds():
    evaluation = Engine().evaluate(DEMO_RULESET, {"start_date": "2026-03-03", "current_dose_mg": 10,
                                                  "marker": 20, "draft_order_id": "mr-1"}, "2026-03-10")
    step_up = next(f for f in evaluation.trace if f.rule_id == "step-up")
    marker = next(c for c in step_up.comparisons if c.fact == "marker")
    assert (marker.actual, marker.op, marker.threshold, marker.threshold_ref) == (20, "lt", 50, "param:marker_low")
    review = next(f for f in evaluation.trace if f.rule_id == "review-due")
    assert review.derived == {"review_due": True, "next_dose_mg": 20}


def test_eight_threads_give_the_single_threaded_results():
    engine = Engine()
    inputs = list(demo_cases())
    expected = [outcome(engine, facts) for facts in inputs]
    failures = []

    def worker(offset):
        for i in range(2000):
            k = (i + offset) % len(inputs)
            try:
                if outcome(engine, inputs[k]) != expected[k]:
                    failures.append((offset, i, "different"))
            except Exception as exc:  # noqa: BLE001 - every failure is collected and asserted below
                failures.append((offset, i, repr(exc)))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_more_than_1024_sequential_evaluations_of_one_ruleset():
    engine = Engine()
    facts = {"weight_kg": 12, "weight_date": "2026-03-09"}
    for _ in range(1500):
        evaluation = engine.evaluate(DEMO_RULESET, facts, "2026-03-10")
    assert evaluation.topics() == ["start-dose"]


def test_an_action_that_raises_is_reported_not_swallowed():
    # Two rules that disagree about one derived fact make the second action raise inside durable-rules.
    text = edited(demo_text(), "        days_on_therapy: {expr:",
                  "        review_due: false\n        days_on_therapy: {expr:")
    broken = load_ruleset(DEMO, text=text)
    with pytest.raises(EvaluationError, match="two rules disagree"):
        Engine().evaluate(broken, {"start_date": "2026-03-03", "current_dose_mg": 10}, "2026-03-10")
    # The engine keeps working afterwards.
    assert Engine().evaluate(DEMO_RULESET, {"weight_kg": 12, "weight_date": "2026-03-09"},
                             "2026-03-10").topics() == ["start-dose"]


def test_text_where_a_number_belongs_never_reaches_the_engine():
    with pytest.raises(EvaluationError, match="must be a number"):
        Engine().evaluate(DEMO_RULESET, {"weight_kg": "80", "weight_date": "2026-03-09"}, "2026-03-10")


def test_implausible_and_stale_values_are_missing_with_a_reason():
    engine = Engine()
    implausible = engine.evaluate(DEMO_RULESET, {"weight_kg": 500, "weight_date": "2026-03-09"}, "2026-03-10")
    assert implausible.topics() == ["data-missing"]
    assert "implausible" in implausible.missing["weight_kg"]
    future = engine.evaluate(DEMO_RULESET, {"weight_kg": 20, "weight_date": "2026-03-12"}, "2026-03-10")
    assert future.topics() == ["data-missing"]


def test_not_of_a_comparison_holds_when_the_fact_is_missing():
    evaluation = Engine().evaluate(DEMO_RULESET, {"start_date": "2026-03-09", "draft_dose_mg": 10},
                                   "2026-03-10")
    assert "wrong-route" in evaluation.topics()
    oral = Engine().evaluate(DEMO_RULESET, {"start_date": "2026-03-09", "draft_dose_mg": 10, "route": "oral"},
                             "2026-03-10")
    assert "wrong-route" not in oral.topics()


def test_suggestion_above_the_maximum_is_withheld():
    text = edited(demo_text(), "min(current_dose_mg + dose_step_mg, max_daily_dose_mg)",
                  "current_dose_mg + dose_step_mg")
    unsafe = load_ruleset(DEMO, text=text)
    evaluation = Engine().evaluate(unsafe, {"start_date": "2026-03-03", "current_dose_mg": 40, "marker": 20,
                                            "draft_order_id": "d"}, "2026-03-10")
    # current dose at the maximum: the step-up rule itself does not fire ...
    assert "increase" not in evaluation.topics()
    evaluation = Engine().evaluate(unsafe, {"start_date": "2026-03-03", "current_dose_mg": 35, "marker": 20,
                                            "draft_order_id": "d"}, "2026-03-10")
    (increase,) = [d for d in evaluation.decisions if d.topic == "increase"]
    assert increase.suggestion is None
    assert "exceeds the maximum 40" in increase.detail


def test_versions_with_different_content_never_replace_each_other():
    engine = Engine()
    original = engine.evaluate(DEMO_RULESET, {"weight_kg": 12, "weight_date": "2026-03-09"}, "2026-03-10")
    changed = load_ruleset(DEMO, text=edited(demo_text(), "low_dose_mg: {value: 10", "low_dose_mg: {value: 15"))
    assert engine.evaluate(changed, {"weight_kg": 12, "weight_date": "2026-03-09"},
                           "2026-03-10").decisions[0].suggestion.daily_dose == 15
    again = engine.evaluate(DEMO_RULESET, {"weight_kg": 12, "weight_date": "2026-03-09"}, "2026-03-10")
    assert again.decisions[0].suggestion.daily_dose == original.decisions[0].suggestion.daily_dose == 10


def test_a_rule_with_any_fires_once_when_several_branches_match():
    # durable-rules runs the action once per matching branch of an `any`; the runtime keeps one firing.
    evaluation = Engine().evaluate(DEMO_RULESET, {"start_date": "2026-02-01", "marker": 200, "current_dose_mg": 10},
                                   "2026-03-10")
    assert evaluation.fired_rules.count("stop") == 1
    assert evaluation.topics() == ["stop"]


def test_a_second_copy_of_a_registered_version_is_not_compiled_again():
    from engine import runtime
    engine = Engine()
    first = engine.register(DEMO_RULESET)
    copy_of_it = load_ruleset(DEMO)
    assert copy_of_it is not DEMO_RULESET
    assert engine.register(copy_of_it) is first
    assert runtime._BY_OBJECT[id(copy_of_it)][:2] == (copy_of_it, first)


def test_numbers_the_engine_cannot_read_in_exponent_form_still_evaluate():
    # durable-rules' JSON reader rejects 1e-05 or 1e+20; Python writes such floats that way.
    engine = Engine()
    for marker in (1e-05, 5e-308, 1e20, 1e300):
        evaluation = engine.evaluate(DEMO_RULESET, {"start_date": "2026-03-03", "current_dose_mg": 10, "marker": marker,
                                                    "draft_order_id": "d"}, "2026-03-10")
        assert ("increase" in evaluation.topics()) is (marker < 50)


def test_infinite_numbers_are_missing_with_a_reason():
    evaluation = Engine().evaluate(DEMO_RULESET, {"weight_kg": float("inf"), "weight_date": "2026-03-09"}, "2026-03-10")
    assert evaluation.topics() == ["data-missing"]
    assert "not a finite number" in evaluation.missing["weight_kg"]
