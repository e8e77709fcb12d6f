"""FHIR R4 resources of a patient's whole timeline: Patient, Conditions, Procedures, Observations, orders."""
from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from .model import PATIENT_ID_SYSTEM, TEST_DATA_TAG, Json, Order, Profile, Timeline, mg
from .scenario import Protocol, Scenarios
from .timeline import weight_value

UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
RANGE_MEANING = "http://terminology.hl7.org/CodeSystem/referencerange-meaning"




class Ids:
    """Resource ids as UUIDs drawn from the patient's generator: stable per seed, unique within a cohort."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def next(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))


def patient_resources(name: str, profile: Profile, timeline: Timeline, day0: date, rng: random.Random, ids: Ids,
                      protocol: Protocol) -> list[Json]:
    scenarios = protocol.scenarios
    codes = Codings.of(scenarios)
    patient = _patient_resource(name, profile, day0, ids.next())
    if profile.ancestry is not None:
        patient["extension"] = [_ancestry(scenarios.data["codings"]["ancestry"], profile.ancestry)]
    subject = {"reference": f"urn:uuid:{patient['id']}"}
    at = _Clock(day0, scenarios.time_zone)
    resources = [patient]
    resources += _conditions(profile, at, subject, ids, rng, codes)
    resources += _procedures(profile, timeline, at, subject, ids, codes)
    resources += _observations(profile, timeline, at, subject, ids, rng, codes, protocol)
    resources += _orders(timeline, at, subject, ids, protocol)
    resources += _other_orders(profile, timeline, at, subject, ids, protocol)
    return resources


@dataclass(frozen=True)
class _Clock:
    """Timeline days as FHIR dates and dateTimes."""

    day0: date
    time_zone: str  # every dateTime's offset; the extractor reads the day as written

    def day(self, offset: int) -> str:
        return (self.day0 + timedelta(days=offset)).isoformat()

    def time(self, offset: int, clock: str) -> str:
        return f"{self.day(offset)}T{clock}:00{self.time_zone}"


@dataclass(frozen=True)
class Codings:
    """The scenario file's codings as CodeableConcepts: observations, index procedure and transfusion, diagnoses,
    and history items with their onset range (days before day 0) and clinical status."""

    observations: dict[str, Json]
    procedures: dict[str, Json]
    diagnoses: dict[str, Json]
    history: dict[str, tuple[Json, tuple[int, int], str]]

    @classmethod
    def of(cls, scenarios: Scenarios) -> Codings:
        data = scenarios.data["codings"]
        return cls({k: _coded(v) for k, v in data["observations"].items()},
                   {k: _coded(v) for k, v in data.get("procedures", {}).items()},
                   {k: _coded(v) for k, v in data["diagnoses"].items()},
                   {k: (_coded(v), tuple(v["onset_days_before"]), v["status"]) for k, v in data["history"].items()})


def _coded(spec: Json) -> Json:
    return _concept(spec["system"], spec["code"], spec["text"], spec.get("display"))


def _concept(system: str, code: str, text: str, display: str | None = None) -> Json:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding], "text": text}


def _patient_resource(name: str, profile: Profile, day0: date, resource_id: str) -> Json:
    return {
        "resourceType": "Patient", "id": resource_id, "meta": {"tag": [TEST_DATA_TAG]},
        "identifier": [{"system": PATIENT_ID_SYSTEM, "value": name}],
        "gender": profile.sex,
        "birthDate": (day0 - timedelta(days=profile.age_days)).isoformat(),
    }


def _ancestry(spec: Json, group: str) -> Json:
    """The race extension with the group's parts (a broad category, a detailed code) and its text."""
    written = spec["groups"][group]
    parts: list[Json] = [{"url": part, "valueCoding": {k: v for k, v in written[part].items() if k != "text"}}
                         for part in ("ombCategory", "detailed") if part in written]
    return {"url": spec["extension"], "extension": parts + [{"url": "text", "valueString": written["text"]}]}


def _condition(concept: Json, onset: str, status: str, subject: Json, resource_id: str) -> Json:
    return {
        "resourceType": "Condition", "id": resource_id,
        "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": status}]},
        "verificationStatus": {"coding": [{"system": CONDITION_VERIFICATION, "code": "confirmed"}]},
        "code": concept, "subject": subject, "onsetDateTime": onset,
    }


def _conditions(profile: Profile, at: _Clock, subject: Json, ids: Ids, rng: random.Random,
                codes: Codings) -> list[Json]:
    """The diagnosis months before day 0, and the history the exclusion criteria look at."""
    diagnosis = codes.diagnoses[profile.diagnosis]
    found = [_condition(diagnosis, at.day(-rng.randint(150, 500)), "active", subject, ids.next())]
    for item in profile.history:
        concept, (low, high), status = codes.history[item]
        found.append(_condition(concept, at.day(-rng.randint(low, high)), status, subject, ids.next()))
    return found


def _procedure(concept: Json, when: str, subject: Json, resource_id: str) -> Json:
    return {"resourceType": "Procedure", "id": resource_id, "status": "completed", "code": concept,
            "subject": subject, "performedDateTime": when}


def _procedures(profile: Profile, timeline: Timeline, at: _Clock, subject: Json, ids: Ids,
                codes: Codings) -> list[Json]:
    index, transfusion = codes.procedures.get("index"), codes.procedures.get("transfusion")
    found = [_procedure(index, at.time(day, "10:00"), subject, ids.next()) for day in profile.procedure_days
             ] if index else []
    return found + ([_procedure(transfusion, at.time(day, "14:00"), subject, ids.next())
                     for day in sorted(timeline.transfusions)] if transfusion else [])


def _quantity(value: float | int, unit: str, ucum: bool = True) -> Json:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit} if ucum else {"value": value, "unit": unit}


def _observation(code: Json, category: str, when: str, subject: Json, resource_id: str, **value: Any) -> Json:
    return {"resourceType": "Observation", "id": resource_id, "status": "final",
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": category}]}],
            "code": code, "subject": subject, "effectiveDateTime": when, **value}




def _observations(profile: Profile, timeline: Timeline, at: _Clock, subject: Json, ids: Ids, rng: random.Random,
                  codes: Codings, protocol: Protocol) -> list[Json]:
    coded, days = codes.observations, protocol.scenarios.data["timeline"]
    weight_units = protocol.weight_units.factors if timeline.weights else {}
    found = [_platelet_observation(coded["platelets"], day, count, at, subject, ids.next(), rng)
             for day, count in sorted(timeline.platelets.items())]
    found += [_observation(coded["weight"], "vital-signs", at.time(day, "08:00"), subject, ids.next(),
                           valueQuantity=_quantity(weight_value(kg, timeline.weight_units[day], weight_units),
                                                   timeline.weight_units[day]))
              for day, kg in sorted(timeline.weights.items())]
    found += list(_liver_observations(profile, at, subject, ids, rng, coded, protocol))
    if profile.performance_score is not None:
        found += [_observation(coded["performance_score"], "survey", at.time(day, "10:00"), subject, ids.next(),
                               valueInteger=profile.performance_score)
                  for day in days.get("performance_score_days", [])]
    return found


def _platelet_observation(code: Json, day: int, count: int, at: _Clock, subject: Json, resource_id: str,
                          rng: random.Random) -> Json:
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
    return _observation(code, "laboratory", at.time(day, "06:30"), subject, resource_id, valueQuantity=quantity)


def _liver_observations(profile: Profile, at: _Clock, subject: Json, ids: Ids, rng: random.Random,
                        coded: dict[str, Json], protocol: Protocol) -> Iterator[Json]:
    scenarios, mass_factor = protocol.scenarios, protocol.bilirubin_units.factors["mg/dL"]
    labs, every = scenarios.data["labs"], scenarios.data["timeline"]["liver_tests"]
    lowest, ranges = labs["lowest_uln"], labs["reference_highs"]
    """Weekly ALT, AST and total bilirubin; a third carry the lab's own reference range."""
    for day in range(every["first_day"], scenarios.days + 1, every["every_days"]):
        when = at.time(day, "06:30")
        raised = profile.alt == "high" or (profile.alt == "rising" and day >= (profile.start_day or 0) + 10)
        alt = round(labs["highest_alt_uln"] * rng.uniform(3.5, 6)) if raised else round(
            lowest["alt"] * rng.uniform(0.3, 0.95))
        ast = round(lowest["ast"] * rng.uniform(0.4, 0.95))
        bilirubin = round(lowest["bilirubin"] * rng.uniform(0.2, 0.8), 1)
        yield _lab(coded["alt"], alt, "U/L", _range(rng, ranges["alt"], "U/L"), when, subject, ids.next())
        yield _lab(coded["ast"], ast, "U/L", _range(rng, ranges["ast"], "U/L"), when, subject, ids.next())
        if rng.random() < 0.7:
            yield _lab(coded["bilirubin_molar"], bilirubin, "umol/L", _range(rng, ranges["bilirubin"], "umol/L"), when,
                       subject, ids.next())
        else:
            yield _lab(coded["bilirubin_mass"], round(bilirubin / mass_factor, 2), "mg/dL",
                       _range(rng, ranges["bilirubin"], "mg/dL", mass_factor), when, subject, ids.next())


def _range(rng: random.Random, highs: list[float], unit: str, factor: float | None = None) -> list[Json] | None:
    """The lab's own upper limit on a third of results; the rest leave the ULN to the site table."""
    if rng.random() >= 1 / 3:
        return None
    high = rng.choice(highs)
    if factor is not None:  # the highs are in the canonical unit
        high = round(high / factor, 1)
    return [{"high": _quantity(high, unit),
             "type": {"coding": [{"system": RANGE_MEANING, "code": "normal"}]}}]


def _lab(code: Json, value: float | int, unit: str, ranges: list[Json] | None, when: str, subject: Json,
         resource_id: str) -> Json:
    extra = {"referenceRange": ranges} if ranges else {}
    return _observation(code, "laboratory", when, subject, resource_id, valueQuantity=_quantity(value, unit), **extra)


def _orders(timeline: Timeline, at: _Clock, subject: Json, ids: Ids, protocol: Protocol) -> list[Json]:
    """One MedicationRequest per dose; a new dose replaces the previous order (priorPrescription)."""
    found: list[Json] = []
    for order in timeline.orders:
        resource = _order_resource(order, at, subject, ids.next(), protocol)
        if found:
            resource["priorPrescription"] = {"reference": f"urn:uuid:{found[-1]['id']}"}
        found.append(resource)
    return found


def _order_resource(order: Order, at: _Clock, subject: Json, resource_id: str, protocol: Protocol) -> Json:
    medication, written = protocol.medication, protocol.scenarios.data["orders"]
    bounds = {"start": at.day(order.start)}
    if order.end is not None:
        bounds["end"] = at.day(order.end)
    timing = {"boundsPeriod": bounds, "frequency": medication.frequency_per_day, "period": 1, "periodUnit": "d"}
    instruction: Json = {"text": written["instruction"].format(dose=mg(order.dose), unit=medication.dose_unit),
                         "timing": {"repeat": timing}}
    if medication.route:
        route = medication.route
        instruction["route"] = _concept(route["system"], route["code"], route["display"])
    instruction["doseAndRate"] = [{"doseQuantity": _quantity(order.dose, medication.dose_unit)}]
    resource = {
        "resourceType": "MedicationRequest", "id": resource_id, "status": order.status, "intent": "order",
        "medicationCodeableConcept": {"text": written["medication_text"]},
        "subject": subject, "authoredOn": at.time(order.start, "09:00"), "dosageInstruction": [instruction],
    }
    if order.reason:
        resource["statusReason"] = {"text": order.reason}
    return resource


def _other_orders(profile: Profile, timeline: Timeline, at: _Clock, subject: Json, ids: Ids,
                  protocol: Protocol) -> list[Json]:
    """The ward's other drugs, each from its day or alongside the course (and then only for the treated)."""
    found = []
    for spec in protocol.scenarios.data["orders"]["others"]:
        if "from_day" in spec:
            found.append(_other_order(spec["medication"], spec["instruction"], at, spec["from_day"], subject,
                                      ids.next()))
        elif timeline.orders:
            first, last = timeline.orders[0], timeline.orders[-1]
            step = spec.get("round_units_to", 1)
            units = round(spec.get("units_per_kg", 0) * (profile.weight_kg or 0) / step) * step
            found.append(_other_order(spec["medication"], spec["instruction"].format(units=units), at, first.start,
                                      subject, ids.next(), end=last.end))
    return found


def _other_order(medication: str, instruction: str, at: _Clock, start: int, subject: Json, resource_id: str,
                 end: int | None = None) -> Json:
    bounds = {"start": at.day(start)} | ({"end": at.day(end)} if end is not None else {})
    return {"resourceType": "MedicationRequest", "id": resource_id, "status": "active" if end is None else "stopped",
            "intent": "order", "medicationCodeableConcept": {"text": medication}, "subject": subject,
            "authoredOn": at.time(start, "09:00"),
            "dosageInstruction": [{"text": instruction, "timing": {"repeat": {"boundsPeriod": bounds}}}]}


