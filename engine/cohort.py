"""Synthetic FHIR R4 cohorts: plausible children along a post-transplant timeline, for impact analysis and benchmarks.

`cdsrules cohort generate` writes one Bundle per patient and an index (`cohort.json`) naming, for each patient, the
dates where protocol decisions change. A cohort is a pure function of (n, seed, start): one `random.Random` per
patient, drawn from one seeded generator, no clock and no global random state, so a seed gives byte-identical files.

The generator plays the clinician who follows the protocol (start from day +4 at the weight-band dose, one level up
at a 14-day review below 50 x 10^9/L, stop at 100 or after 42 days), acting the day after each criterion is met, so
that on the criterion day the record still shows the situation the rules must react to. A Bundle is a snapshot of the
whole timeline; `engine.fhir.resources_as_of` gives the record as it stood on an evaluation date.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, NamedTuple

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
RANGE_MEANING = "http://terminology.hl7.org/CodeSystem/referencerange-meaning"
TEST_DATA_TAG = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST",
                 "display": "test health data"}
PATIENT_ID_SYSTEM = "https://cdsrules.example.org/fhir/sid/synthetic-patient"

DEFAULT_START = date(2026, 1, 5)
INDEX_FILE = "cohort.json"
END_DAY = 50  # the timeline ends here: after the longest course (start day + 42) and inside the 60-day scope
STANDARD_DAYS = (2, 4, 10, 18, 25, 32, 46)  # before the start, the start, between reviews, reviews, the six weeks
TZ = "+08:00"  # the protocol's site (Beijing); the extractor reads the day as written

# Protocol numbers the simulated clinician follows (rules/hetrombopag/1.0.0.yaml); the rules decide, not this.
EARLIEST_START, REVIEW_DAYS, MAX_DAYS = 4, 14, 42
LOW_DOSE, STEP, MAX_DOSE, WEIGHT_BAND_KG = 2.5, 2.5, 7.5, 20.0
INCREASE_BELOW, STOP_AT, TRANSFUSION_DAYS = 50, 100, 7

# One block of scenarios, shuffled per block: any n >= len(_BLOCK) contains every scenario.
_BLOCK = (
    "treated-fast", "treated-fast", "treated-fast", "treated-slow", "treated-slow", "treated-slow",
    "treated-plateau", "treated-plateau", "treated-plateau", "hepatotoxicity", "late-transfusion",
    "weight-band-low", "weight-band-high", "untreated", "no-ecog", "too-old", "too-old", "no-neuroblastoma",
    "second-transplant", "cardiac", "cardiac", "thrombosis", "liver", "ecog",
)
_INELIGIBLE = {"too-old", "no-neuroblastoma", "second-transplant", "cardiac", "thrombosis", "liver", "ecog"}
_BOUNDARY_WEIGHTS = {"weight-band-low": (19.5, 20.0), "weight-band-high": (20.1, 21.0)}  # either side of "> 20 kg"

# Median body weight (kg) by age (years), both sexes, roughly the WHO/CDC curves.
_GROWTH = ((0.5, 7.6), (1, 9.6), (1.5, 10.9), (2, 12.2), (3, 14.3), (4, 16.3), (5, 18.4), (6, 20.7), (7, 23.1),
           (8, 25.8), (9, 28.8), (10, 32.3), (11, 36.5), (12, 41.0), (13, 45.7), (14, 50.5), (15, 54.5),
           (16, 57.5), (17, 60.0), (18, 61.5), (19, 62.5), (20, 63.5))

# Normal values are drawn under the lowest paediatric ULN and raised ones above 3.5 x the highest (adult) ULN, so
# the site's age band or the result's own range never changes which side of the limit a value falls.
_LOWEST_ULN = {"alt": 26.0, "ast": 33.0, "bilirubin": 18.9}
_HIGHEST_ALT_ULN = 40.0
_LAB_RANGES = {"alt": (26, 29, 33, 40), "ast": (33, 36, 41, 40), "bilirubin": (18.9, 20.5, 21)}


# --- the public types -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CohortPatient:
    """One synthetic patient: the FHIR resources of the whole timeline and the dates worth evaluating."""

    name: str  # the file stem, also the Patient identifier: patient-0001
    scenario: str
    description: str
    transplant_date: date
    evaluation_dates: list[date]
    resources: list[dict]
    bundle_id: str


class CohortCase(NamedTuple):
    """A patient as read back from disk: unpacks as (resources, evaluation_dates, description)."""

    resources: list[dict]
    evaluation_dates: list[date]
    description: str

    @property
    def name(self) -> str:
        """The Patient's synthetic identifier (the file stem), for reports."""
        patient = next((r for r in self.resources if r.get("resourceType") == "Patient"), {})
        ids = [i.get("value") for i in patient.get("identifier", []) if i.get("system") == PATIENT_ID_SYSTEM]
        return ids[0] if ids else str(patient.get("id", "?"))


# --- the generator's own model of a patient ------------------------------------------------------------


@dataclass(frozen=True)
class _Curve:
    """A platelet course: fall from `baseline` to `nadir` by `nadir_day`, then a logistic rise towards `level`."""

    baseline: float
    nadir: float
    nadir_day: int
    level: float
    midpoint: float
    width: float

    def at(self, day: int) -> float:
        if day <= self.nadir_day:
            return self.baseline * (self.nadir / self.baseline) ** (max(day, 0) / self.nadir_day)
        rise = (_logistic(day, self.midpoint, self.width) - _logistic(self.nadir_day, self.midpoint, self.width))
        rise /= 1 - _logistic(self.nadir_day, self.midpoint, self.width)
        return self.nadir + (self.level - self.nadir) * rise


def _logistic(x: float, midpoint: float, width: float) -> float:
    return 1 / (1 + math.exp(-(x - midpoint) / width))


@dataclass(frozen=True)
class _Profile:
    """Who the patient is and what the scenario asks of the timeline; every random draw about the person is here."""

    scenario: str
    age_days: int  # at day 0
    sex: str
    weight_kg: float
    weight_fixed: bool  # boundary patients keep one exact weight so the dose band is the one intended
    diagnosis: str  # a key of _DIAGNOSES
    hsct_days: tuple[int, ...]  # completed autologous HSCTs, days relative to day 0
    history: tuple[str, ...]  # heart-failure | arrhythmia | myocardial-infarction | active-dvt | old-dvt
    ecog: int | None  # None: never recorded
    alt: str  # normal | high | rising
    recovery: str  # fast | slow | plateau
    transfusion_threshold: int  # transfuse below this count in the first two weeks; 0: never
    late_transfusion: bool
    start_day: int | None  # None: never treated


@dataclass(frozen=True)
class _Order:
    start: int
    dose: float
    end: int | None  # last day taken; None while the order is still active at the end of the timeline
    status: str  # active | completed (replaced by a new dose) | stopped (protocol stop)
    reason: str | None


@dataclass
class _Timeline:
    """What happened: measured platelet counts (incl. transfused platelets), transfusions, weights, orders."""

    platelets: dict[int, int] = field(default_factory=dict)
    transfusions: list[int] = field(default_factory=list)
    weights: dict[int, float] = field(default_factory=dict)  # day -> kg as recorded and read back
    weight_units: dict[int, str] = field(default_factory=dict)
    orders: list[_Order] = field(default_factory=list)
    decision_days: set[int] = field(default_factory=set)
    events: list[str] = field(default_factory=list)


# --- generating -----------------------------------------------------------------------------------------


def generate_cohort(n: int, seed: int, start: date = DEFAULT_START) -> list[CohortPatient]:
    """n patients whose transplants fall on or after `start` (the first patient's on it); deterministic per seed."""
    if n < 1:
        raise ValueError(f"a cohort needs at least one patient, not {n}")
    rng = random.Random(seed)
    scenarios = _scenario_plan(n, rng)
    seeds = [rng.getrandbits(64) for _ in range(n)]
    return [_patient(i + 1, scenario, random.Random(s), start)
            for i, (scenario, s) in enumerate(zip(scenarios, seeds, strict=True))]


def _scenario_plan(n: int, rng: random.Random) -> list[str]:
    """Whole shuffled blocks, so that every scenario appears once n reaches a block, whatever the seed."""
    plan: list[str] = []
    while len(plan) < n:
        block = list(_BLOCK)
        rng.shuffle(block)
        plan.extend(block)
    return plan[:n]


def _patient(index: int, scenario: str, rng: random.Random, start: date) -> CohortPatient:
    name = f"patient-{index:04d}"
    day0 = start + timedelta(days=0 if index == 1 else rng.randint(0, 120))
    profile = _profile(scenario, rng)
    timeline = _timeline(profile, rng)
    ids = _Ids(rng)
    resources = _resources(name, profile, timeline, day0, rng, ids)
    days = sorted({d for d in STANDARD_DAYS + tuple(timeline.decision_days) if 0 <= d <= END_DAY})
    return CohortPatient(name, scenario, _description(profile, timeline, day0), day0,
                         [day0 + timedelta(days=d) for d in days], resources, ids.next())


def _profile(scenario: str, rng: random.Random) -> _Profile:
    """Draw the person; the scenario fixes only what it is about, everything else is ordinary variation."""
    age_years = _age_years(scenario, rng)
    weight_fixed = scenario in _BOUNDARY_WEIGHTS
    weight = rng.choice(_BOUNDARY_WEIGHTS[scenario]) if weight_fixed else _weight_for_age(age_years, rng)
    treated = scenario.startswith("treated-") or scenario in ("hepatotoxicity", "late-transfusion") or weight_fixed
    return _Profile(
        scenario=scenario,
        age_days=round(age_years * 365.25),
        sex=rng.choice(("male", "female")),
        weight_kg=weight,
        weight_fixed=weight_fixed,
        diagnosis=rng.choice(_OTHER_DIAGNOSES if scenario == "no-neuroblastoma" else _NEUROBLASTOMA),
        hsct_days=(-rng.randint(42, 70), 0) if scenario == "second-transplant" else (0,),
        history=_history(scenario, rng),
        ecog=None if scenario == "no-ecog" else 3 if scenario == "ecog" else rng.choice((0, 1, 1, 2)),
        alt={"liver": "high", "hepatotoxicity": "rising"}.get(scenario, "normal"),
        recovery=_recovery(scenario, rng),
        transfusion_threshold=rng.choice((0, 10, 15, 20)),
        late_transfusion=scenario == "late-transfusion",
        start_day=_start_day(scenario, rng) if treated else None,
    )


def _recovery(scenario: str, rng: random.Random) -> str:
    if scenario.startswith("treated-"):
        return scenario.removeprefix("treated-")
    if scenario == "late-transfusion":
        return "fast"
    if scenario == "hepatotoxicity":
        return rng.choice(("slow", "plateau"))  # still on therapy when the liver tests rise
    return rng.choice(("fast", "slow", "plateau"))


def _age_years(scenario: str, rng: random.Random) -> float:
    """Neuroblastoma is a disease of small children; a few infants and teenagers, and 18-19 for the age limit."""
    if scenario == "too-old":
        return rng.uniform(18.05, 19.9)
    if scenario in _BOUNDARY_WEIGHTS:
        return rng.uniform(5.0, 7.0)
    band = rng.random()
    if band < 0.15:
        return rng.uniform(0.5, 1.0)
    if band < 0.75:
        return rng.uniform(1.0, 6.0)
    return rng.uniform(6.0, 17.8)  # still under 18 at the end of the timeline


def _weight_for_age(age_years: float, rng: random.Random) -> float:
    """Median weight for age, a little under (after intensive therapy), with noise."""
    for (a0, w0), (a1, w1) in itertools.pairwise(_GROWTH):
        if a0 <= age_years <= a1:
            median = w0 + (w1 - w0) * (age_years - a0) / (a1 - a0)
            break
    else:
        median = _GROWTH[-1][1]
    return round(median * 0.95 * min(max(rng.gauss(1, 0.12), 0.75), 1.35), 1)


def _history(scenario: str, rng: random.Random) -> tuple[str, ...]:
    if scenario == "cardiac":
        return (rng.choice(("heart-failure", "arrhythmia", "myocardial-infarction")),)
    if scenario == "thrombosis":
        return ("active-dvt",)
    return ("old-dvt",) if rng.random() < 0.1 else ()  # a resolved line thrombosis years ago does not exclude


def _start_day(scenario: str, rng: random.Random) -> int:
    """Day +4 for most; a weight-band patient starts later so that day +4 shows the start-dose decision."""
    if scenario in _BOUNDARY_WEIGHTS:
        return rng.randint(5, 7)
    return EARLIEST_START if rng.random() < 0.65 else rng.randint(5, 7)


# --- the timeline -----------------------------------------------------------------------------------------


def _timeline(profile: _Profile, rng: random.Random) -> _Timeline:
    timeline = _Timeline()
    _platelet_course(profile, rng, timeline)
    _weights(profile, rng, timeline)
    if profile.start_day is not None:
        _treat(profile, timeline)
    return timeline


def _curve(recovery: str, rng: random.Random) -> _Curve:
    """Engraftment speeds: fast (>= 100 by about day 20), slow (< 50 until about day 30), plateau (50-90)."""
    baseline, nadir = rng.uniform(60, 180), rng.uniform(5, 20)
    if recovery == "fast":
        day = rng.randint(5, 8)
        return _Curve(baseline, nadir, day, rng.uniform(160, 280), day + rng.uniform(7, 10), rng.uniform(1.8, 2.8))
    if recovery == "slow":
        day = rng.randint(7, 10)
        return _Curve(baseline, nadir, day, rng.uniform(110, 170), rng.uniform(34, 40), rng.uniform(3, 4.5))
    day = rng.randint(5, 10)
    return _Curve(baseline, nadir, day, rng.uniform(58, 88), day + rng.uniform(6, 11), rng.uniform(2, 3.5))


def _platelet_days(rng: random.Random) -> list[int]:
    """Daily until day +28 (now and then a day missed, never two), then every other day."""
    days, skipped = [], False
    for day in range(-1, 29):
        skipped = not skipped and day > 1 and rng.random() < 0.08
        if not skipped:
            days.append(day)
    return days + list(range(30, END_DAY + 1, 2))


def _platelet_course(profile: _Profile, rng: random.Random, timeline: _Timeline) -> None:
    """Measured counts: the patient's own course with noise, plus the transfused platelets of recent transfusions."""
    curve = _curve(profile.recovery, rng)
    boost: dict[int, float] = {}
    for day in _platelet_days(rng):
        own = curve.at(day) * min(max(rng.gauss(1, 0.05), 0.88), 1.12)
        count = max(1, round(own + boost.get(day, 0)))
        timeline.platelets[day] = count
        if _transfuse(profile, timeline, day, count):
            timeline.transfusions.append(day)
            for after, extra in ((1, rng.uniform(20, 35)), (2, rng.uniform(10, 20)), (3, rng.uniform(3, 8))):
                boost[day + after] = boost.get(day + after, 0) + extra
    if profile.late_transfusion:
        _late_transfusion(timeline)


def _transfuse(profile: _Profile, timeline: _Timeline, day: int, count: int) -> bool:
    """Below the patient's threshold in the first two weeks, at most every third day."""
    recent = timeline.transfusions and day - timeline.transfusions[-1] < 3
    return 1 <= day <= 14 and count < profile.transfusion_threshold and not recent


def _late_transfusion(timeline: _Timeline) -> None:
    """A transfusion (say, before a line removal) two days before the count first reaches 100: that count and the
    next week's are not the patient's own, so they must not stop the drug."""
    first = next(d for d in sorted(timeline.platelets) if d > 10 and timeline.platelets[d] >= STOP_AT)
    if first - 2 not in timeline.transfusions:
        timeline.transfusions.append(first - 2)
    timeline.decision_days.add(first)
    timeline.events.append(f"transfusion day +{first - 2} before the first count >= 100 (day +{first})")


def _weights(profile: _Profile, rng: random.Random, timeline: _Timeline) -> None:
    """Every third day; a slow loss during aplasia; recorded mostly in kg, some in g or pounds."""
    loss = 0 if profile.weight_fixed else rng.uniform(0, 0.05)
    for day in range(-2, END_DAY + 1, 3):
        kg = profile.weight_kg
        if not profile.weight_fixed:
            kg = round(kg * (1 - loss * max(day, 0) / END_DAY) + rng.gauss(0, 0.004 * kg), 1)
        unit = _weight_unit(rng)
        if profile.weight_fixed and unit == "[lb_av]":
            unit = "g"  # pounds would round across the 20 kg band boundary
        timeline.weights[day] = _weight_read_back(kg, unit)
        timeline.weight_units[day] = unit


def _weight_unit(rng: random.Random) -> str:
    draw = rng.random()
    return "kg" if draw < 0.8 else "g" if draw < 0.9 else "[lb_av]"


def _weight_value(kg: float, unit: str) -> float | int:
    """The number a scale in that unit would record."""
    if unit == "g":
        return round(kg * 1000)
    if unit == "[lb_av]":
        return round(kg / 0.45359237, 1)
    return kg


def _weight_read_back(kg: float, unit: str) -> float:
    """The kilograms a reader gets back from the recorded number: what the clinician's dose must be based on."""
    factor = {"kg": 1, "g": 0.001, "[lb_av]": 0.45359237}[unit]
    return round(_weight_value(kg, unit) * factor, 6)


def _latest(values: dict[int, Any], day: int) -> tuple[int, Any] | None:
    known = [d for d in values if d <= day]
    return (max(known), values[max(known)]) if known else None


def _stop_reason(timeline: _Timeline, days_on_therapy: int, count_day: int, count: int) -> str | None:
    """Six weeks, or an own count of 100 (not within 7 days after a transfusion: those platelets are donated)."""
    if days_on_therapy >= MAX_DAYS:
        return "six weeks of therapy"
    own = not any(0 <= count_day - t <= TRANSFUSION_DAYS for t in timeline.transfusions)
    return f"platelets {count}" if count >= STOP_AT and own else None


def _treat(profile: _Profile, timeline: _Timeline) -> None:
    """The protocol as a careful clinician follows it, acting the day after each criterion is met."""
    start = profile.start_day
    _, weight = _latest(timeline.weights, start)
    dose = LOW_DOSE if weight <= WEIGHT_BAND_KG else LOW_DOSE + STEP
    began, last_change, reviewed = start, start, False
    timeline.decision_days.add(start + REVIEW_DAYS)
    for day in range(start, END_DAY + 1):
        count_day, count = _latest(timeline.platelets, day)
        stop = _stop_reason(timeline, day - start, count_day, count)
        if stop:
            timeline.orders.append(_Order(began, dose, day, "stopped", f"Protocol stop: {stop}"))
            timeline.decision_days.add(day)
            timeline.events.append(f"stop day +{day + 1} ({stop} on day +{day})")
            return
        if day - last_change >= REVIEW_DAYS and count < INCREASE_BELOW and dose < MAX_DOSE:
            timeline.orders.append(_Order(began, dose, day, "completed", "Dose increased at titration review"))
            timeline.decision_days.add(day)
            dose, began, last_change, reviewed = dose + STEP, day + 1, day + 1, False
            timeline.events.append(f"{_mg(dose)} mg from day +{day + 1} (platelets {count} on day +{day})")
        elif day - last_change >= REVIEW_DAYS and not reviewed:
            timeline.decision_days.add(day)  # a review that keeps the dose
            reviewed = True
    timeline.orders.append(_Order(began, dose, None, "active", None))


# --- FHIR resources -------------------------------------------------------------------------------------------


class _Ids:
    """Resource ids as UUIDs drawn from the patient's generator: stable per seed, unique within a cohort."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def next(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))


def _resources(name: str, profile: _Profile, timeline: _Timeline, day0: date, rng: random.Random,
               ids: _Ids) -> list[dict]:
    patient = _patient_resource(name, profile, day0, ids.next())
    subject = {"reference": f"urn:uuid:{patient['id']}"}
    at = _Clock(day0)
    resources = [patient]
    resources += _conditions(profile, at, subject, ids, rng)
    resources += _procedures(profile, timeline, at, subject, ids)
    resources += _observations(profile, timeline, at, subject, ids, rng)
    resources += _orders(timeline, at, subject, ids)
    resources += _supportive_orders(profile, timeline, at, subject, ids)
    return resources


@dataclass(frozen=True)
class _Clock:
    """Timeline days as FHIR dates and dateTimes."""

    day0: date

    def day(self, offset: int) -> str:
        return (self.day0 + timedelta(days=offset)).isoformat()

    def time(self, offset: int, clock: str) -> str:
        return f"{self.day(offset)}T{clock}:00{TZ}"


def _concept(system: str, code: str, text: str, display: str | None = None) -> dict:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding], "text": text}


def _patient_resource(name: str, profile: _Profile, day0: date, resource_id: str) -> dict:
    return {
        "resourceType": "Patient", "id": resource_id, "meta": {"tag": [TEST_DATA_TAG]},
        "identifier": [{"system": PATIENT_ID_SYSTEM, "value": name}],
        "gender": profile.sex,
        "birthDate": (day0 - timedelta(days=profile.age_days)).isoformat(),
    }


def _condition(concept: dict, onset: str, status: str, subject: dict, resource_id: str) -> dict:
    return {
        "resourceType": "Condition", "id": resource_id,
        "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": status}]},
        "verificationStatus": {"coding": [{"system": CONDITION_VERIFICATION, "code": "confirmed"}]},
        "code": concept, "subject": subject, "onsetDateTime": onset,
    }


_DIAGNOSES = {  # the description's words -> the coded diagnosis
    "neuroblastoma": _concept(SNOMED, "432328008", "Neuroblastoma"),
    "neuroblastoma (ICD-10-CM)": _concept(ICD10CM, "C74.90", "Neuroblastoma of adrenal gland"),
    "Hodgkin lymphoma": _concept(ICD10, "C81.9", "Hodgkin lymphoma"),
    "medulloblastoma": _concept(ICD10, "C71.6", "Medulloblastoma"),
    "Ewing sarcoma": _concept(ICD10, "C41.9", "Ewing sarcoma"),
}
_NEUROBLASTOMA = ("neuroblastoma", "neuroblastoma", "neuroblastoma (ICD-10-CM)")
_OTHER_DIAGNOSES = ("Hodgkin lymphoma", "medulloblastoma", "Ewing sarcoma")  # also treated with autologous HSCT
# Concept, onset range (days before day 0), clinical status. Exclusions stay inside their window (365 or 90 days)
# until the end of the timeline, so an "ineligible" patient is ineligible on every evaluation date.
_HISTORY = {
    "heart-failure": (_concept(SNOMED, "42343007", "Congestive heart failure"), (60, 300), "resolved"),
    "arrhythmia": (_concept(ICD10, "I47.1", "Supraventricular tachycardia"), (30, 300), "resolved"),
    "myocardial-infarction": (_concept(SNOMED, "22298006", "Myocardial infarction"), (10, 35), "resolved"),
    "active-dvt": (_concept(SNOMED, "128053003", "Deep venous thrombosis, catheter-related"), (7, 40), "active"),
    "old-dvt": (_concept(SNOMED, "128053003", "Deep venous thrombosis, catheter-related"), (400, 900), "resolved"),
}


def _conditions(profile: _Profile, at: _Clock, subject: dict, ids: _Ids, rng: random.Random) -> list[dict]:
    """The diagnosis months before the transplant, and the history the exclusion criteria look at."""
    found = [_condition(_DIAGNOSES[profile.diagnosis], at.day(-rng.randint(150, 500)), "active", subject, ids.next())]
    for item in profile.history:
        concept, (low, high), status = _HISTORY[item]
        found.append(_condition(concept, at.day(-rng.randint(low, high)), status, subject, ids.next()))
    return found


def _procedure(concept: dict, when: str, subject: dict, resource_id: str) -> dict:
    return {"resourceType": "Procedure", "id": resource_id, "status": "completed", "code": concept,
            "subject": subject, "performedDateTime": when}


def _procedures(profile: _Profile, timeline: _Timeline, at: _Clock, subject: dict, ids: _Ids) -> list[dict]:
    hsct = _concept(SNOMED, "709115004", "Autologous haematopoietic stem cell transplant")
    transfusion = _concept(SNOMED, "180208003", "Platelet transfusion")
    return ([_procedure(hsct, at.time(day, "10:00"), subject, ids.next()) for day in profile.hsct_days]
            + [_procedure(transfusion, at.time(day, "14:00"), subject, ids.next())
               for day in sorted(timeline.transfusions)])


def _quantity(value: float | int, unit: str, ucum: bool = True) -> dict:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit} if ucum else {"value": value, "unit": unit}


def _observation(code: dict, category: str, when: str, subject: dict, resource_id: str, **value: Any) -> dict:
    return {"resourceType": "Observation", "id": resource_id, "status": "final",
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": category}]}],
            "code": code, "subject": subject, "effectiveDateTime": when, **value}


_PLATELETS = _concept(LOINC, "777-3", "Platelets", "Platelets [#/volume] in Blood by Automated count")
_WEIGHT = _concept(LOINC, "29463-7", "Body weight", "Body weight")
_ECOG = _concept(LOINC, "89247-1", "ECOG performance status", "ECOG Performance Status score")
_ALT = _concept(LOINC, "1742-6", "ALT", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma")
_AST = _concept(LOINC, "1920-8", "AST", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma")
_BILI_MOLAR = _concept(LOINC, "14631-6", "Total bilirubin", "Bilirubin.total [Moles/volume] in Serum or Plasma")
_BILI_MASS = _concept(LOINC, "1975-2", "Total bilirubin", "Bilirubin.total [Mass/volume] in Serum or Plasma")
LIVER_DAYS = range(-1, END_DAY + 1, 7)
ECOG_DAYS = (-7, 14, 35)


def _observations(profile: _Profile, timeline: _Timeline, at: _Clock, subject: dict, ids: _Ids,
                  rng: random.Random) -> list[dict]:
    found = [_platelet_observation(day, count, at, subject, ids.next(), rng)
             for day, count in sorted(timeline.platelets.items())]
    found += [_observation(_WEIGHT, "vital-signs", at.time(day, "08:00"), subject, ids.next(),
                           valueQuantity=_quantity(_weight_value(kg, timeline.weight_units[day]),
                                                   timeline.weight_units[day]))
              for day, kg in sorted(timeline.weights.items())]
    found += list(_liver_observations(profile, at, subject, ids, rng))
    if profile.ecog is not None:
        found += [_observation(_ECOG, "survey", at.time(day, "10:00"), subject, ids.next(),
                               valueInteger=profile.ecog)
                  for day in ECOG_DAYS]
    return found


def _platelet_observation(day: int, count: int, at: _Clock, subject: dict, resource_id: str,
                          rng: random.Random) -> dict:
    """Mostly 10*9/L; some 10*3/uL (the same number), some /uL (x 1000), a few with a lab's non-UCUM label."""
    draw = rng.random()
    if draw < 0.65:
        quantity = _quantity(count, "10*9/L")
    elif draw < 0.85:
        quantity = _quantity(count, "10*3/uL")
    elif draw < 0.95:
        quantity = _quantity(count * 1000, "/uL")
    else:
        quantity = _quantity(count, "10^9/L", ucum=False)
    return _observation(_PLATELETS, "laboratory", at.time(day, "06:30"), subject, resource_id, valueQuantity=quantity)


def _liver_observations(profile: _Profile, at: _Clock, subject: dict, ids: _Ids,
                        rng: random.Random) -> Iterator[dict]:
    """Weekly ALT, AST and total bilirubin; a third carry the lab's own reference range."""
    for day in LIVER_DAYS:
        when = at.time(day, "06:30")
        raised = profile.alt == "high" or (profile.alt == "rising" and day >= (profile.start_day or 0) + 10)
        alt = round(_HIGHEST_ALT_ULN * rng.uniform(3.5, 6)) if raised else round(
            _LOWEST_ULN["alt"] * rng.uniform(0.3, 0.95))
        ast = round(_LOWEST_ULN["ast"] * rng.uniform(0.4, 0.95))
        bilirubin = round(_LOWEST_ULN["bilirubin"] * rng.uniform(0.2, 0.8), 1)
        yield _lab(_ALT, alt, "U/L", _range(rng, "alt", "U/L"), when, subject, ids.next())
        yield _lab(_AST, ast, "U/L", _range(rng, "ast", "U/L"), when, subject, ids.next())
        if rng.random() < 0.7:
            yield _lab(_BILI_MOLAR, bilirubin, "umol/L", _range(rng, "bilirubin", "umol/L"), when, subject, ids.next())
        else:
            yield _lab(_BILI_MASS, round(bilirubin / 17.1, 2), "mg/dL", _range(rng, "bilirubin", "mg/dL"), when,
                       subject, ids.next())


def _range(rng: random.Random, test: str, unit: str) -> list[dict] | None:
    """The lab's own upper limit on a third of results; the rest leave the ULN to the site table."""
    if rng.random() >= 1 / 3:
        return None
    high = rng.choice(_LAB_RANGES[test])
    if unit == "mg/dL":
        high = round(high / 17.1, 1)
    return [{"high": _quantity(high, unit),
             "type": {"coding": [{"system": RANGE_MEANING, "code": "normal"}]}}]


def _lab(code: dict, value: float | int, unit: str, ranges: list[dict] | None, when: str, subject: dict,
         resource_id: str) -> dict:
    extra = {"referenceRange": ranges} if ranges else {}
    return _observation(code, "laboratory", when, subject, resource_id, valueQuantity=_quantity(value, unit), **extra)


def _orders(timeline: _Timeline, at: _Clock, subject: dict, ids: _Ids) -> list[dict]:
    """One MedicationRequest per dose; a new dose replaces the previous order (priorPrescription)."""
    found: list[dict] = []
    for order in timeline.orders:
        resource = _order_resource(order, at, subject, ids.next())
        if found:
            resource["priorPrescription"] = {"reference": f"urn:uuid:{found[-1]['id']}"}
        found.append(resource)
    return found


def _order_resource(order: _Order, at: _Clock, subject: dict, resource_id: str) -> dict:
    bounds = {"start": at.day(order.start)}
    if order.end is not None:
        bounds["end"] = at.day(order.end)
    resource = {
        "resourceType": "MedicationRequest", "id": resource_id, "status": order.status, "intent": "order",
        "medicationCodeableConcept": {"text": "Hetrombopag olamine tablet"},
        "subject": subject, "authoredOn": at.time(order.start, "09:00"),
        "dosageInstruction": [{
            "text": f"{_mg(order.dose)} mg orally once daily on an empty stomach",
            "timing": {"repeat": {"boundsPeriod": bounds, "frequency": 1, "period": 1, "periodUnit": "d"}},
            "route": _concept(SNOMED, "26643006", "Oral route"),
            "doseAndRate": [{"doseQuantity": _quantity(order.dose, "mg")}],
        }],
    }
    if order.reason:
        resource["statusReason"] = {"text": order.reason}
    return resource


def _supportive_orders(profile: _Profile, timeline: _Timeline, at: _Clock, subject: dict, ids: _Ids) -> list[dict]:
    """The other drugs of a transplant ward (prophylaxis from day -7; rhTPO beside hetrombopag, per protocol).

    Besides realism they make the record say "medications were looked at": without any MedicationRequest the
    extractor cannot tell an untreated patient from an unknown medication history.
    """
    found = [_other_order("Ursodeoxycholic acid tablet", "10 mg/kg/day orally in two doses (VOD prophylaxis)",
                          at, -7, subject, ids.next()),
             _other_order("Aciclovir tablet", "Antiviral prophylaxis, orally three times daily", at, -7, subject,
                          ids.next())]
    if timeline.orders:
        first, last = timeline.orders[0], timeline.orders[-1]
        units = round(300 * profile.weight_kg / 100) * 100
        rhtpo = _other_order("Recombinant human thrombopoietin (rhTPO) injection",
                             f"{units} U (300 U/kg) subcutaneously once daily, with hetrombopag per protocol",
                             at, first.start, subject, ids.next(), end=last.end)
        found.append(rhtpo)
    return found


def _other_order(medication: str, instruction: str, at: _Clock, start: int, subject: dict, resource_id: str,
                 end: int | None = None) -> dict:
    bounds = {"start": at.day(start)} | ({"end": at.day(end)} if end is not None else {})
    return {"resourceType": "MedicationRequest", "id": resource_id, "status": "active" if end is None else "stopped",
            "intent": "order", "medicationCodeableConcept": {"text": medication}, "subject": subject,
            "authoredOn": at.time(start, "09:00"),
            "dosageInstruction": [{"text": instruction, "timing": {"repeat": {"boundsPeriod": bounds}}}]}


def _mg(dose: float) -> str:
    return f"{dose:g}"


# --- descriptions -------------------------------------------------------------------------------------------------


_SCENARIO_TEXT = {
    "treated-fast": "treated, fast recovery", "treated-slow": "treated, slow recovery",
    "treated-plateau": "treated, plateau 50-90", "hepatotoxicity": "treated, ALT rises above 3 x ULN on therapy",
    "late-transfusion": "treated, fast recovery with a transfusion just before 100",
    "weight-band-low": "treated, weight at the 20 kg dose boundary (low band)",
    "weight-band-high": "treated, weight just above the 20 kg dose boundary (high band)",
    "untreated": "eligible, never treated",
    "no-ecog": "no ECOG on record (eligibility incomplete)", "too-old": "ineligible: age 18 or over",
    "no-neuroblastoma": "ineligible: no neuroblastoma", "second-transplant": "ineligible: second autologous HSCT",
    "cardiac": "ineligible: recent cardiac history", "thrombosis": "ineligible: active DVT",
    "liver": "ineligible: ALT above 3 x ULN", "ecog": "ineligible: ECOG 3",
}


def _description(profile: _Profile, timeline: _Timeline, day0: date) -> str:
    """One line a reader of an impact report can picture the patient from."""
    years, months = divmod(int(profile.age_days / 30.4375), 12)
    age = f"{years} y {months} mo" if years else f"{months} mo"
    parts = [f"{age}, {profile.weight_kg:g} kg", profile.diagnosis, f"HSCT {day0.isoformat()}"]
    parts += [h.replace("-", " ") for h in profile.history]
    if timeline.orders:
        parts.append(f"hetrombopag {_mg(timeline.orders[0].dose)} mg from day +{timeline.orders[0].start}")
    parts += timeline.events
    if timeline.transfusions:
        parts.append(f"{len(timeline.transfusions)} platelet transfusion(s)")
    return f"{_SCENARIO_TEXT[profile.scenario]}: " + "; ".join(parts)


# --- files -----------------------------------------------------------------------------------------------------


def write_cohort(patients: list[CohortPatient], out_dir: Path, about: dict[str, Any] | None = None) -> Path:
    """One Bundle (type collection) per patient and the index; returns the index path. Files are byte-stable.

    `about` (e.g. n, seed, start) goes into the index so that a cohort says how to make it again.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = []
    for patient in patients:
        file = f"{patient.name}.json"
        _write_json(out_dir / file, _bundle(patient))
        index.append({"file": file, "scenario": patient.scenario, "description": patient.description,
                      "transplant_date": patient.transplant_date.isoformat(),
                      "evaluation_dates": [d.isoformat() for d in patient.evaluation_dates]})
    path = out_dir / INDEX_FILE
    _write_json(path, {"generator": "cdsrules cohort generate", **(about or {}), "patients": index})
    return path


def _bundle(patient: CohortPatient) -> dict:
    return {"resourceType": "Bundle", "id": patient.bundle_id, "meta": {"tag": [TEST_DATA_TAG]},
            "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in patient.resources]}


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_cohort(folder: str | Path) -> list[CohortCase]:
    """Each patient of a written cohort: its resources (the whole timeline), evaluation dates and description.
    Evaluate a date on `fhir.resources_as_of(resources, date)`, not on the whole timeline."""
    folder = Path(folder)
    index = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
    cases = []
    for entry in index["patients"]:
        bundle = json.loads((folder / entry["file"]).read_text(encoding="utf-8"))
        resources = [e["resource"] for e in bundle.get("entry", []) if isinstance(e.get("resource"), dict)]
        dates = [date.fromisoformat(d) for d in entry["evaluation_dates"]]
        cases.append(CohortCase(resources, dates, entry["description"]))
    return cases


# --- command line -----------------------------------------------------------------------------------------------


def add_cohort_command(subparsers: argparse._SubParsersAction) -> None:
    """Register `cohort generate`; its handler is set as `command`, the way cdsrules.cli dispatches."""
    cohort = subparsers.add_parser("cohort", help="synthetic FHIR R4 cohorts for impact analysis and benchmarks")
    actions = cohort.add_subparsers(dest="cohort_action", metavar="ACTION", required=True)
    p = actions.add_parser("generate", help="write N synthetic patients (FHIR R4 Bundles) and an index")
    p.add_argument("--n", type=_positive_int, required=True, metavar="N", help="number of patients")
    p.add_argument("--seed", type=int, required=True, metavar="S", help="the same seed writes the same files")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--start", type=date.fromisoformat, default=DEFAULT_START, metavar="YYYY-MM-DD",
                   help=f"the earliest transplant date (default {DEFAULT_START})")
    p.set_defaults(command=cmd_cohort_generate)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def cmd_cohort_generate(args: argparse.Namespace) -> int:
    """Write the cohort and say where; 0 on success (errors propagate to cli.main, which reports them)."""
    patients = generate_cohort(args.n, args.seed, args.start)
    index = write_cohort(patients, args.out, {"n": args.n, "seed": args.seed, "start": args.start.isoformat()})
    ineligible = sum(p.scenario in _INELIGIBLE for p in patients)
    print(f"wrote {len(patients)} patients ({ineligible} ineligible by design) to {args.out}; index {index}")
    return 0
