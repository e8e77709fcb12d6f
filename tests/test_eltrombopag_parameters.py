"""The eltrombopag-itp choices left to the site, set the other way in an edited copy of the released ruleset.

`unrecorded_ancestry_start` (no-dose | reduced) and `liver_action` (warn | stop) are open points of the label; the
released file ships the defaults, whose branches its own tests cover. Here a copy of the rules tree in a temporary
folder has one of them changed, and is read from FHIR bundles like the released one.
"""
import shutil

import pytest

from engine.loader import load_ruleset
from engine.runtime import Engine
from engine.testing import run_case
from tests.helpers import ROOT, edited

RELEASED = ROOT / "rules" / "eltrombopag-itp" / "1.0.0.yaml"
ENGINE = Engine()
ANCESTRY_DEFAULT = "  unrecorded_ancestry_start:\n    value: no-dose\n"
LIVER_DEFAULT = "  liver_action:\n    value: warn\n"


def copy_with(tmp_path, old: str, new: str):
    """The rules tree copied to tmp_path, eltrombopag-itp 1.0.0 edited there, loaded from the copy."""
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    path = rules / "eltrombopag-itp" / "1.0.0.yaml"
    path.write_text(edited(RELEASED.read_text(encoding="utf-8"), old, new), encoding="utf-8")
    return load_ruleset(path)


@pytest.fixture
def reduced(tmp_path):
    ruleset = copy_with(tmp_path, ANCESTRY_DEFAULT, ANCESTRY_DEFAULT.replace("no-dose", "reduced"))
    assert ruleset.param("unrecorded_ancestry_start") == "reduced"
    return ruleset


@pytest.fixture
def stop(tmp_path):
    ruleset = copy_with(tmp_path, LIVER_DEFAULT, LIVER_DEFAULT.replace("warn", "stop"))
    assert ruleset.param("liver_action") == "stop"
    return ruleset


def evaluate(ruleset, case):
    result = run_case(ruleset, {"name": "case", **case}, ENGINE)
    assert result.passed, result.differences
    assert result.evaluation is not None
    return result.evaluation


def card(evaluation, topic):
    return next(d for d in evaluation.decisions if d.topic == topic)


def test_the_released_file_is_left_as_released():
    """The copies are edited, never the released file: its defaults are what the branches below differ from."""
    released = load_ruleset(RELEASED)
    assert released.param("unrecorded_ancestry_start") == "no-dose" and released.param("liver_action") == "warn"


# --- unrecorded_ancestry_start: reduced ---------------------------------------------------------------------------

ADULT_START = {"age_years": 30, "has_itp": True, "has_hepatic_impairment": False, "eltrombopag_current": False,
               "eltrombopag_draft": True, "eltrombopag_draft_id": "d1", "eltrombopag_draft_dose_mg": 25,
               "eltrombopag_draft_per_day": 1}


def test_race_only_as_the_broad_category_gets_the_reduced_start_dose_and_says_why(reduced):
    evaluation = evaluate(reduced, {
        "date": "2026-03-01", "hook": "order-select",
        "fhir": "tests/asian-category-only.json", "draft_orders": "tests/draft-25mg.json",
        "expect": {"facts": {"ancestry_policy": "reduced", "ancestry_assumed": True, "start_dose_mg": 25,
                             "recommended_dose_mg": 25},
                   "absent_facts": ["east_asian_ancestry", "missing_data"],
                   "decisions": [{"topic": "start-dose", "indicator": "info", "dose": None}]}})
    start = card(evaluation, "start-dose")
    assert "ancestry not recorded" in start.summary and "Start eltrombopag 25 mg" in start.summary
    assert "`unrecorded_ancestry_start` = reduced" in start.detail
    assert "the reduced dose is proposed for it" in start.detail
    assert "2028-9" in start.detail  # why ancestry is not recorded: the broad category only
    assert reduced.parameters["unrecorded_ancestry_start"].source in start.detail


def test_a_draft_at_the_standard_dose_is_changed_to_the_reduced_one_naming_the_parameter(reduced):
    evaluation = evaluate(reduced, {
        "date": "2026-03-01", "hook": "order-sign",
        "fhir": "tests/asian-category-only.json", "draft_orders": "tests/draft-50mg.json",
        "expect": {"decisions": [{"topic": "dose-mismatch", "dose": 25, "action": "update"}]}})
    mismatch = card(evaluation, "dose-mismatch")
    assert "ancestry not recorded, reduced dose proposed (unrecorded_ancestry_start)" in mismatch.detail
    assert mismatch.suggestion is not None and mismatch.suggestion.order_id == "draft-1"


def test_no_race_extension_at_all_is_unrecorded_too(reduced):
    evaluate(reduced, {"date": "2026-03-01", "hook": "order-sign",
                       "facts": {**ADULT_START, "east_asian_ancestry": None},
                       "expect": {"facts": {"ancestry_assumed": True, "start_dose_mg": 25},
                                  "decisions": [{"topic": "start-dose", "dose": None}]}})


def test_unrecorded_ancestry_with_hepatic_impairment_gets_the_lowest_start_dose(reduced):
    evaluate(reduced, {"date": "2026-03-01", "hook": "order-sign",
                       "facts": {**ADULT_START, "east_asian_ancestry": None, "has_hepatic_impairment": True},
                       "expect": {"facts": {"ancestry_assumed": True, "start_dose_mg": 12.5},
                                  "decisions": [{"topic": "dose-mismatch", "dose": 12.5, "action": "update"}]}})


@pytest.mark.parametrize("bundle, start", [("tests/east-asian-child.json", 25), ("tests/no-itp.json", None)])
def test_recorded_ancestry_still_decides_and_the_choice_assumes_nothing_else(reduced, bundle, start):
    """A detailed race code decides as before; a patient without ITP stays out of scope."""
    expect = {"facts": {"start_dose_mg": start}, "absent_facts": ["ancestry_assumed"]} if start else \
        {"absent_facts": ["in_scope", "start_dose_mg", "ancestry_assumed"], "decisions": []}
    evaluate(reduced, {"date": "2026-03-01", "hook": "order-select", "fhir": bundle,
                       "draft_orders": "tests/draft-25mg.json", "expect": expect})


def test_recorded_other_ancestry_keeps_the_standard_start_dose(reduced):
    evaluate(reduced, {"date": "2026-03-01", "hook": "order-sign",
                       "facts": {**ADULT_START, "east_asian_ancestry": False, "eltrombopag_draft_dose_mg": 50},
                       "expect": {"facts": {"start_dose_mg": 50}, "absent_facts": ["ancestry_assumed"],
                                  "decisions": [{"topic": "start-dose"}]}})


# --- liver_action: stop ---------------------------------------------------------------------------------------------

def test_alt_at_the_limit_suggests_stopping_the_current_order(stop):
    evaluation = evaluate(stop, {
        "date": "2026-03-15", "hook": "patient-view", "fhir": "tests/active-alt-high.json",
        "expect": {"facts": {"liver_policy": "stop", "alt_ratio": 3.25},
                   "decisions": [{"topic": "titration-maintain"},
                                 {"topic": "liver-safety", "indicator": "warning", "action": "stop", "dose": None}]}})
    liver = card(evaluation, "liver-safety")
    assert liver.rule_id == "liver-safety-stop"
    assert "stop suggested" in liver.summary and "3.25 x ULN" in liver.summary
    assert "`liver_action` = stop" in liver.detail
    assert liver.suggestion is not None and liver.suggestion.order_id == "mr-1"


def test_below_the_limit_nothing_is_stopped(stop):
    facts = {"age_years": 30, "has_itp": True, "eltrombopag_current": True, "eltrombopag_status": "active",
             "eltrombopag_start_date": "2026-03-01", "eltrombopag_dose_since": "2026-03-01",
             "eltrombopag_dose_mg": 50, "eltrombopag_order_id": "mr1", "platelets_10e9_l": 100,
             "platelets_date": "2026-03-15", "alt_u_l": 119, "alt_date": "2026-03-10", "alt_uln_u_l": 40,
             "alt_uln_source": "reference range on the result"}
    evaluate(stop, {"date": "2026-03-15", "hook": "patient-view", "facts": facts,
                    "expect": {"decisions": [{"topic": "titration-maintain"}]}})


def test_the_default_warns_on_the_same_record_without_a_suggestion():
    evaluation = evaluate(load_ruleset(RELEASED), {
        "date": "2026-03-15", "hook": "patient-view", "fhir": "tests/active-alt-high.json",
        "expect": {"decisions": [{"topic": "titration-maintain"}, {"topic": "liver-safety"}]}})
    liver = card(evaluation, "liver-safety")
    assert liver.rule_id == "liver-safety" and liver.suggestion is None
