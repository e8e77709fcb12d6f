"""Properties of the hetrombopag protocol over generated FHIR patients (hypothesis, real extractor and engine).

- No suggestion ever proposes more than the maximum daily dose.
- No dose is suggested to an untreated patient whose weight is missing or stale.
- The same data sent in other units gives the same decisions.
- (1.0.1) No suggestion changes a draft order to the dose and frequency it already holds.
"""
import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.diff import signature
from engine.fhir import extract_facts, load_site_mapping
from engine.loader import load_ruleset
from engine.runtime import Engine
from tests import fhir_fixtures as fx
from tests.helpers import HETROMBOPAG, ROOT

MAPPING = load_site_mapping(ROOT / "rules" / "site" / "fhir-r4.yaml")
RULESET = load_ruleset(HETROMBOPAG)
RULESET_1_0_1 = load_ruleset(ROOT / "rules" / "hetrombopag" / "1.0.1.yaml")
VERSIONS = pytest.mark.parametrize("ruleset", [RULESET, RULESET_1_0_1], ids=lambda r: r.version)
ENGINE = Engine()
MAX_DAILY_DOSE = RULESET.param("max_daily_dose_mg")
TRANSPLANT = dt.date(2026, 3, 1)

# (unit, factor to the canonical unit): the alternative spellings a lab may send.
WEIGHT_UNITS = [("kg", 1), ("g", 0.001), ("[lb_av]", 0.45359237)]
PLATELET_UNITS = [("10*9/L", 1), ("10*3/uL", 1), ("/uL", 0.001), ("/mm3", 0.001)]
BILIRUBIN_UNITS = [("umol/L", 1, "14631-6"), ("mg/dL", 17.1, "1975-2")]


@st.composite
def patients(draw):
    day = draw(st.integers(min_value=-2, max_value=50))
    return {
        "today": TRANSPLANT + dt.timedelta(days=day),
        "age": draw(st.integers(min_value=0, max_value=19)),
        "weight": draw(st.one_of(st.none(), st.decimals(min_value=3, max_value=90, places=1).map(float))),
        "weight_age": draw(st.integers(min_value=0, max_value=10)),
        "platelets": draw(st.one_of(st.none(), st.integers(min_value=0, max_value=300))),
        "platelet_age": draw(st.integers(min_value=0, max_value=4)),
        "alt": draw(st.integers(min_value=5, max_value=150)),
        "bilirubin": draw(st.decimals(min_value=2, max_value=60, places=1).map(float)),
        "ecog": draw(st.integers(min_value=0, max_value=3)),
        "therapy": draw(st.one_of(st.none(), st.tuples(st.integers(min_value=4, max_value=30),
                                                       st.sampled_from([2.5, 5, 7.5])))),
        "draft_dose": draw(st.one_of(st.none(), st.sampled_from([1, 2.5, 5, 7.5, 10, 15]))),
        "draft_frequency": 1,
    }


@st.composite
def drafts_at_a_review(draw):
    """On therapy with a titration review due, and a draft at one of the levels, once or twice daily."""
    p = draw(patients())
    start_day = draw(st.integers(min_value=4, max_value=30))
    today = TRANSPLANT + dt.timedelta(days=draw(st.integers(min_value=start_day + 14, max_value=56)))
    return {**p, "today": today, "therapy": (start_day, draw(st.sampled_from([2.5, 5, 7.5]))),
            "platelets": draw(st.integers(min_value=0, max_value=150)), "weight": p["weight"] or 20.0,
            "draft_dose": draw(st.sampled_from([2.5, 5, 7.5])), "draft_frequency": draw(st.sampled_from([1, 2]))}


def resources(p, weight_unit=WEIGHT_UNITS[0], platelet_unit=PLATELET_UNITS[0], bilirubin_unit=BILIRUBIN_UNITS[0]):
    """The patient as FHIR R4; values are written in the given units (divided by the factor to canonical)."""
    today = p["today"]
    day = lambda offset: (today - dt.timedelta(days=offset)).isoformat()  # noqa: E731
    birth = dt.date(today.year - p["age"], 1, 1)  # evaluation dates fall in spring: completed years = age
    found = [fx.patient(birth.isoformat()),
             fx.procedure("709115004", performed=TRANSPLANT.isoformat()),
             fx.condition("432328008", onset="2025-06-01"),
             fx.observation("1742-6", p["alt"], "U/L", date=day(1)),
             fx.observation("1920-8", 30, "U/L", date=day(1)),
             fx.observation(bilirubin_unit[2], p["bilirubin"] / bilirubin_unit[1], bilirubin_unit[0], date=day(1)),
             fx.observation("89247-1", date=day(3), valueInteger=p["ecog"])]
    if p["weight"] is not None:
        found.append(fx.observation("29463-7", p["weight"] / weight_unit[1], weight_unit[0], date=day(p["weight_age"])))
    if p["platelets"] is not None:
        found.append(fx.observation("777-3", p["platelets"] / platelet_unit[1], platelet_unit[0],
                                    date=day(p["platelet_age"])))
    if p["therapy"] is not None:
        start_day, dose = p["therapy"]
        start = TRANSPLANT + dt.timedelta(days=start_day)
        if start <= today:
            found.append(fx.medication_request(id="mr-active", dose=dose, authored=start.isoformat(),
                                               bounds_start=start.isoformat()))
    return found


def decide(p, ruleset=RULESET, **units):
    drafts = None
    if p["draft_dose"] is not None:
        drafts = [fx.medication_request(id="draft-1", status="draft", dose=p["draft_dose"],
                                        frequency=p["draft_frequency"], authored=p["today"].isoformat())]
    extraction = extract_facts(MAPPING, resources(p, **units), p["today"], draft_orders=drafts,
                               supplied={"Patient", "Observation", "Condition", "Procedure", "MedicationRequest"})
    hook = "order-sign" if drafts else "patient-view"
    return ENGINE.evaluate(ruleset, extraction.facts, p["today"], hook, extraction.problems)


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@VERSIONS
@FAST
@given(patients())
def test_no_suggestion_above_the_maximum_daily_dose(ruleset, p):
    for decision in decide(p, ruleset).decisions:
        if decision.suggestion and decision.suggestion.daily_dose is not None:
            assert decision.suggestion.daily_dose <= MAX_DAILY_DOSE


@VERSIONS
@FAST
@given(patients(), st.one_of(st.none(), st.integers(min_value=1, max_value=30)))
def test_no_dose_for_an_untreated_patient_without_a_current_weight(ruleset, p, days_too_old):
    """days_too_old None: no weight at all; else the weight is that many days past its window."""
    window = RULESET.param("weight_window_days")
    p = {**p, "therapy": None, "weight": None if days_too_old is None else (p["weight"] or 20.0),
         "weight_age": window + (days_too_old or 0)}
    evaluation = decide(p, ruleset)
    assert "start_dose_mg" not in evaluation.facts
    assert all(d.suggestion is None or d.suggestion.daily_dose is None for d in evaluation.decisions)


@VERSIONS
@FAST
@given(patients(), st.sampled_from(WEIGHT_UNITS), st.sampled_from(PLATELET_UNITS), st.sampled_from(BILIRUBIN_UNITS))
def test_the_same_data_in_other_units_gives_the_same_decisions(ruleset, p, weight_unit, platelet_unit,
                                                               bilirubin_unit):
    unit = ruleset.medication.dose_unit
    canonical = signature(decide(p, ruleset), unit)
    converted = signature(decide(p, ruleset, weight_unit=weight_unit, platelet_unit=platelet_unit,
                                 bilirubin_unit=bilirubin_unit), unit)
    assert converted == canonical


@FAST
@given(drafts_at_a_review())
def test_no_suggestion_changes_a_draft_to_what_it_already_orders(p):
    """A draft at the recommended dose once daily is left alone; one that differs gets the change, in one card."""
    evaluation = decide(p, RULESET_1_0_1)
    draft_daily = p["draft_dose"] * p["draft_frequency"]
    for decision in evaluation.decisions:
        suggestion = decision.suggestion
        if suggestion and suggestion.action == "update" and suggestion.order_id == "draft-1":
            assert p["draft_frequency"] != 1 or abs(suggestion.daily_dose - draft_daily) > 1e-9, decision.summary
    recommended = evaluation.facts.get("recommended_dose_mg")
    if recommended is not None and (p["draft_frequency"] != 1 or abs(recommended - draft_daily) > 1e-9):
        assert "dose-mismatch" in evaluation.topics()
        assert "titration-increase" not in evaluation.topics() and "titration-maintain" not in evaluation.topics()
    else:
        assert "dose-mismatch" not in evaluation.topics()
