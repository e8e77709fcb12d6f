"""Properties of the eltrombopag-itp protocol over generated FHIR patients (hypothesis, real extractor and engine).

- No suggestion ever proposes more than the maximum daily dose.
- No dose is suggested from missing data: not to start when age or East-/Southeast-Asian ancestry is not known,
  not on therapy when the platelet count is missing or stale.
- Every dose suggested is one of the protocol's levels, whatever the current order's dose; a current order off
  the levels or above the maximum gets a card saying so and no computed dose (since 1.0.1: 1.0.0 kept an off-level
  dose and stepped from it).
- The same data sent in other units gives the same decisions.

The levels, the maximum and the windows are read from the ruleset, not written here.
"""
import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.diff import signature
from engine.fhir import extract_facts, load_site_mapping
from engine.loader import load_ruleset
from engine.model import ParamRef, Ruleset
from engine.runtime import Engine
from tests import fhir_fixtures as fx
from tests.helpers import ROOT

MAPPING = load_site_mapping(ROOT / "rules" / "site" / "fhir-r4.yaml")
RULESET = load_ruleset(ROOT / "rules" / "eltrombopag-itp" / "1.0.1.yaml")
ENGINE = Engine()
FIRST_DAY = dt.date(2026, 3, 1)
ATC = "http://www.whocc.no/atc"
RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
CDC = "urn:oid:2.16.840.1.113883.6.238"
NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
SUPPLIED = {"Patient", "Observation", "Condition", "Procedure", "MedicationRequest"}


def dose_levels(ruleset: Ruleset) -> set[float]:
    """The daily doses the level tables step between (their outputs), and the maximum they may reach."""
    levels = {float(ruleset.max_daily_dose)} if ruleset.max_daily_dose is not None else set()
    for name in ("level_above", "level_below"):
        for band in ruleset.tables[name].bands:
            output = band.output
            levels.add(float(ruleset.param(output.name) if isinstance(output, ParamRef) else output))
    return levels


MAX_DAILY_DOSE = RULESET.max_daily_dose
LEVELS = dose_levels(RULESET)
START_DOSES = {RULESET.param(name) for name in ("standard_start_dose_mg", "reduced_start_dose_mg",
                                                 "both_reduced_start_dose_mg", "young_child_start_dose_mg")}
PLATELET_WINDOW = RULESET.param("platelet_window_days")

# Race extension parts as (url, system, code): a detailed East-Asian code, a detailed other Asian code, the broad
# category alone, another category, "unknown"; None is no extension at all.
RACES = [None,
         [("ombCategory", CDC, "2028-9"), ("detailed", CDC, "2034-7")],  # Asian, Chinese
         [("ombCategory", CDC, "2028-9"), ("detailed", CDC, "2047-9")],  # Asian, Vietnamese
         [("ombCategory", CDC, "2028-9"), ("detailed", CDC, "2029-7")],  # Asian, Asian Indian
         [("ombCategory", CDC, "2028-9")],
         [("ombCategory", CDC, "2106-3")],  # White
         [("ombCategory", NULL_FLAVOR, "UNK")]]
UNDECIDED_RACES = [None, [("ombCategory", CDC, "2028-9")], [("ombCategory", NULL_FLAVOR, "UNK")]]

# (unit, factor to the canonical unit)
PLATELET_UNITS = [("10*9/L", 1), ("10*3/uL", 1), ("/uL", 0.001), ("/mm3", 0.001)]
ALT_UNITS = [("U/L", 1), ("[IU]/L", 1), ("ukat/L", 60)]

# Doses on and off the levels, and above the maximum, as orders may carry them.
ORDER_DOSES = sorted(LEVELS | {5, 37.5, 100})
DRAFT_DOSES = sorted(LEVELS | {5, 37.5, 100, 150})


def mostly(values):
    """Usually a value, sometimes None: missing data stays common without hiding the rest."""
    return st.one_of(values, values, values, st.none())


@st.composite
def therapies(draw, doses=ORDER_DOSES):
    """An active or on-hold order; sometimes an earlier completed order at another dose (a dose change)."""
    started = draw(st.integers(min_value=0, max_value=60))  # days before today
    changed = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=started)))
    return {"started": started, "changed": changed,
            "first_dose": draw(st.sampled_from(doses)), "dose": draw(st.sampled_from(doses)),
            "status": draw(st.sampled_from(["active", "on-hold"]))}


@st.composite
def patients(draw, order_doses=ORDER_DOSES):
    return {
        "today": FIRST_DAY + dt.timedelta(days=draw(st.integers(min_value=0, max_value=60))),
        "age": draw(mostly(st.integers(min_value=0, max_value=90))),
        "race": draw(st.sampled_from(RACES[1:4] + RACES[5:6] + RACES)),
        "itp": draw(st.booleans()) or draw(st.booleans()),  # mostly with ITP
        "hepatic": draw(st.booleans()),
        "platelets": draw(mostly(st.integers(min_value=0, max_value=1200))),
        "platelet_age": draw(st.sampled_from([0, 0, 1, 3, PLATELET_WINDOW, PLATELET_WINDOW + 1, PLATELET_WINDOW + 3])),
        "alt": draw(mostly(st.integers(min_value=5, max_value=400))),
        "alt_uln": draw(st.one_of(st.none(), st.sampled_from([35, 40, 50]))),
        "therapy": draw(st.one_of(st.none(), therapies(order_doses))),
        "draft_dose": draw(st.one_of(st.none(), st.sampled_from(DRAFT_DOSES))),
        "draft_frequency": draw(st.sampled_from([1, 1, 2])),
        "hook": draw(st.sampled_from(["order-select", "order-sign"])),
    }


def _patient(p):
    birth = None if p["age"] is None else dt.date(p["today"].year - p["age"], 1, 1).isoformat()
    resource = fx.patient(birth)
    if p["race"] is not None:
        resource["extension"] = [{"url": RACE, "extension": [
            {"url": url, "valueCoding": {"system": system, "code": code}} for url, system, code in p["race"]]}]
    return fx.valid(resource)


def _order(id, status, dose, start, frequency=1):
    return fx.medication_request(id=id, status=status, system=ATC, code="B02BX05", dose=dose, frequency=frequency,
                                 authored=start, bounds_start=start)


def resources(p, platelet_unit=PLATELET_UNITS[0], alt_unit=ALT_UNITS[0]):
    """The patient as FHIR R4; values are written in the given units (divided by the factor to canonical)."""
    today = p["today"]
    day = lambda offset: (today - dt.timedelta(days=offset)).isoformat()  # noqa: E731
    found = [_patient(p)]
    if p["itp"]:
        found.append(fx.condition("32273002", onset="2025-06-01"))
    else:
        found.append(fx.condition("306058006", onset="2025-06-01"))  # aplastic anaemia
    if p["hepatic"]:
        found.append(fx.condition("K74.6", fx.ICD10, onset="2024-01-10"))
    if p["platelets"] is not None:
        found.append(fx.observation("777-3", p["platelets"] / platelet_unit[1], platelet_unit[0],
                                    date=day(p["platelet_age"])))
    if p["alt"] is not None:
        ranges = None if p["alt_uln"] is None else [fx.reference_range(p["alt_uln"] / alt_unit[1], alt_unit[0])]
        found.append(fx.observation("1742-6", p["alt"] / alt_unit[1], alt_unit[0], date=day(2), ranges=ranges))
    therapy = p["therapy"]
    if therapy is not None:
        if therapy["changed"] is None:
            found.append(_order("mr-1", therapy["status"], therapy["dose"], day(therapy["started"])))
        else:
            found.append(_order("mr-0", "completed", therapy["first_dose"], day(therapy["started"])))
            found.append(_order("mr-1", therapy["status"], therapy["dose"], day(therapy["changed"])))
    return found


def decide(p, ruleset=RULESET, **units):
    drafts = None
    if p["draft_dose"] is not None:
        drafts = [_order("draft-1", "draft", p["draft_dose"] / p["draft_frequency"], p["today"].isoformat(),
                         frequency=p["draft_frequency"])]
    extraction = extract_facts(MAPPING, resources(p, **units), p["today"], draft_orders=drafts, supplied=SUPPLIED)
    hook = p["hook"] if drafts else "patient-view"
    return ENGINE.evaluate(ruleset, extraction.facts, p["today"], hook, extraction.problems)


def suggested_doses(evaluation):
    return [(d.topic, d.suggestion.daily_dose) for d in evaluation.decisions
            if d.suggestion is not None and d.suggestion.daily_dose is not None]


FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_the_levels_read_from_the_ruleset_are_the_labels():
    """A guard on the reading above: were the tables renamed, the properties below would test nothing."""
    assert LEVELS == {12.5, 25, 50, 75} and MAX_DAILY_DOSE == 75
    assert START_DOSES <= LEVELS


@FAST
@given(patients())
def test_no_suggestion_above_the_maximum_daily_dose(p):
    for topic, dose in suggested_doses(decide(p)):
        assert dose <= MAX_DAILY_DOSE, topic


@FAST
@given(patients())
def test_every_suggested_dose_is_a_level(p):
    """Start doses, steps, restarts and changes to a draft all land on a level, from current orders on and off them."""
    for topic, dose in suggested_doses(decide(p)):
        assert any(abs(dose - level) < 1e-9 for level in LEVELS), (topic, dose)


@FAST
@given(patients(), st.sampled_from(sorted(set(ORDER_DOSES) - LEVELS)))
def test_a_current_order_off_the_levels_gets_a_card_and_no_computed_dose(p, dose):
    """5, 37.5 or 100 mg a day: no next level exists, so no dose is recommended or suggested, and a card says why."""
    therapy = p["therapy"] or {"started": 30, "changed": None, "first_dose": 50, "status": "active"}
    p = {**p, "itp": True, "therapy": {**therapy, "dose": dose}}
    evaluation = decide(p)
    assert "recommended_dose_mg" not in evaluation.facts
    assert suggested_doses(evaluation) == []
    expected = "dose-above-max" if dose > MAX_DAILY_DOSE else "dose-off-level"
    assert expected in evaluation.topics(), evaluation.topics()


@FAST
@given(patients(), st.one_of(st.just(("no age", None)), st.tuples(st.just("race"), st.sampled_from(UNDECIDED_RACES))))
def test_no_start_dose_when_age_or_ancestry_is_not_known(p, gap):
    """Starting (a draft, no current order): without an age, or from 6 years with ancestry recorded only as the
    broad category, as unknown or not at all (the default `unrecorded_ancestry_start` asks rather than assumes)."""
    assert RULESET.param("unrecorded_ancestry_start") == "no-dose"
    kind, race = gap
    p = {**p, "itp": True, "therapy": None, "draft_dose": p["draft_dose"] or 50}
    p.update({"age": None} if kind == "no age" else {"age": max(p["age"] or 6, 6), "race": race})
    evaluation = decide(p)
    assert "start_dose_mg" not in evaluation.facts and "recommended_dose_mg" not in evaluation.facts
    assert suggested_doses(evaluation) == []
    assert "data-missing" in evaluation.topics()


@FAST
@given(patients(), st.one_of(st.none(), st.integers(min_value=1, max_value=30)))
def test_no_dose_on_therapy_without_a_current_platelet_count(p, days_too_old):
    """days_too_old None: no count at all; else the count is that many days past its window."""
    therapy = p["therapy"] or {"started": 30, "changed": None, "first_dose": 50, "dose": 50, "status": "active"}
    p = {**p, "itp": True, "therapy": therapy, "platelets": None if days_too_old is None else (p["platelets"] or 100),
         "platelet_age": PLATELET_WINDOW + (days_too_old or 0)}
    evaluation = decide(p)
    assert "recommended_dose_mg" not in evaluation.facts
    assert suggested_doses(evaluation) == []
    assert "data-missing" in evaluation.topics()


@FAST
@given(patients(), st.sampled_from(PLATELET_UNITS), st.sampled_from(ALT_UNITS))
def test_the_same_data_in_other_units_gives_the_same_decisions(p, platelet_unit, alt_unit):
    unit = RULESET.medication.dose_unit
    canonical = signature(decide(p), unit)
    assert signature(decide(p, platelet_unit=platelet_unit, alt_unit=alt_unit), unit) == canonical


@FAST
@given(patients())
def test_a_draft_at_the_recommended_dose_once_daily_is_left_alone(p):
    """A draft that orders the recommended dose once daily gets no change; one that differs gets one card."""
    evaluation = decide(p)
    recommended = evaluation.facts.get("recommended_dose_mg")
    if p["draft_dose"] is None or recommended is None:
        assert "dose-mismatch" not in evaluation.topics()
        return
    differs = p["draft_frequency"] != 1 or abs(recommended - p["draft_dose"]) > 1e-9
    assert ("dose-mismatch" in evaluation.topics()) == differs
