"""Small FHIR R4 resources for tests, each checked against the FHIR models so a fixture cannot drift from the spec.

fhir.resources 8.3.0 ships R5 (default), R4B and STU3 models but no R4 package; R4B is R4 plus a few additions and
is identical for the resources used here, so R4B validates them. Fixtures that deliberately imitate malformed
client data (STU3 doseQuantity, doseAndRate as an object) are reshaped after validation by `reshaped_*` helpers.
"""
from __future__ import annotations

import copy
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
FORMULARY = "urn:oid:2.16.840.1.113883.3.hospital.formulary"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
RANGE_MEANING = "http://terminology.hl7.org/CodeSystem/referencerange-meaning"
PATIENT_REF = {"reference": "Patient/p1"}

_counter = 0


def valid(resource: dict) -> dict:
    """Validate against the FHIR model for its resourceType and hand back the plain dict."""
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return resource


def _next_id(prefix: str) -> str:
    global _counter
    _counter += 1
    return f"{prefix}{_counter}"


def patient(birth_date: str | None = "2018-06-15", id: str = "p1") -> dict:
    resource: dict[str, Any] = {"resourceType": "Patient", "id": id}
    if birth_date is not None:
        resource["birthDate"] = birth_date
    return valid(resource)


def quantity(value: float, unit: str | None, ucum: bool = True) -> dict:
    """A Quantity; `ucum=False` gives a bare label (no system or code), as many lab systems send."""
    if unit is None:
        return {"value": value}
    if ucum:
        return {"value": value, "unit": unit, "system": UCUM, "code": unit}
    return {"value": value, "unit": unit}


def observation(code: str, value: float | None = None, unit: str | None = None, *, date: str = "2026-01-03",
                status: str = "final", id: str | None = None, ucum: bool = True, system: str = LOINC,
                ranges: list[dict] | None = None, effective: str = "dateTime", **value_x: Any) -> dict:
    """An Observation with a valueQuantity (or any value[x] passed as a keyword, e.g. valueInteger=1)."""
    resource: dict[str, Any] = {
        "resourceType": "Observation", "id": id or _next_id("obs"), "status": status,
        "code": {"coding": [{"system": system, "code": code}]}, "subject": PATIENT_REF,
    }
    if effective == "dateTime":
        resource["effectiveDateTime"] = date
    elif effective == "period":
        resource["effectivePeriod"] = {"start": date}
    elif effective == "issued":
        resource["issued"] = date + "T08:00:00+08:00"
    if value is not None:
        resource["valueQuantity"] = quantity(value, unit, ucum)
    resource.update(value_x)
    if ranges is not None:
        resource["referenceRange"] = ranges
    return valid(resource)


def reference_range(high: float | None = None, unit: str | None = None, *, text: str | None = None,
                    type_code: str | None = None, age: tuple[float, float, str] | None = None) -> dict:
    """An Observation.referenceRange entry; `age` is (low, high, UCUM unit such as 'a' or 'mo')."""
    entry: dict[str, Any] = {}
    if high is not None:
        entry["high"] = quantity(high, unit)
    if text is not None:
        entry["text"] = text
    if type_code is not None:
        entry["type"] = {"coding": [{"system": RANGE_MEANING, "code": type_code}]}
    if age is not None:
        low, top, age_unit = age
        entry["age"] = {"low": quantity(low, age_unit), "high": quantity(top, age_unit)}
    return entry


def condition(code: str, system: str = SNOMED, *, clinical: str | None = "active",
              verification: str | None = "confirmed", onset: str | None = "2025-06-01",
              onset_period: str | None = None, recorded: str | None = None, id: str | None = None) -> dict:
    resource: dict[str, Any] = {
        "resourceType": "Condition", "id": id or _next_id("cond"),
        "code": {"coding": [{"system": system, "code": code}]}, "subject": PATIENT_REF,
    }
    if clinical is not None:
        resource["clinicalStatus"] = {"coding": [{"system": CONDITION_CLINICAL, "code": clinical}]}
    if verification is not None:
        resource["verificationStatus"] = {"coding": [{"system": CONDITION_VERIFICATION, "code": verification}]}
    if onset is not None:
        resource["onsetDateTime"] = onset
    if onset_period is not None:
        resource["onsetPeriod"] = {"start": onset_period}
    if recorded is not None:
        resource["recordedDate"] = recorded
    return valid(resource)


def procedure(code: str, system: str = SNOMED, *, performed: str | None = "2025-12-01", status: str = "completed",
              period: bool = False, id: str | None = None) -> dict:
    resource: dict[str, Any] = {
        "resourceType": "Procedure", "id": id or _next_id("proc"), "status": status,
        "code": {"coding": [{"system": system, "code": code}]}, "subject": PATIENT_REF,
    }
    if performed is not None:
        if period:
            resource["performedPeriod"] = {"start": performed}
        else:
            resource["performedDateTime"] = performed
    return valid(resource)


def medication_request(*, id: str | None = None, status: str = "active", code: str | None = "HETROMBOPAG-2.5",
                       system: str = FORMULARY, display: str | None = None, text: str | None = None,
                       dose: float | None = 2.5, unit: str = "mg", frequency: int | None = 1,
                       period: float | None = 1, period_unit: str | None = "d", repeat: bool = True,
                       authored: str | None = "2026-01-01", bounds_start: str | None = None) -> dict:
    """A MedicationRequest with one dosage instruction; pass code=None to recognise it by text/display only."""
    concept: dict[str, Any] = {}
    if code is not None or display is not None:
        coding = {"system": system, "code": code or "LOCAL-1"}
        if display is not None:
            coding["display"] = display
        concept["coding"] = [coding]
    if text is not None:
        concept["text"] = text
    dosage: dict[str, Any] = {}
    if dose is not None:
        dosage["doseAndRate"] = [{"doseQuantity": quantity(dose, unit)}]
    if repeat:
        timing_repeat: dict[str, Any] = {}
        for key, value in (("frequency", frequency), ("period", period), ("periodUnit", period_unit)):
            if value is not None:
                timing_repeat[key] = value
        if bounds_start is not None:
            timing_repeat["boundsPeriod"] = {"start": bounds_start}
        dosage["timing"] = {"repeat": timing_repeat}
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest", "id": id or _next_id("mr"), "status": status, "intent": "order",
        "medicationCodeableConcept": concept, "subject": PATIENT_REF, "dosageInstruction": [dosage],
    }
    if authored is not None:
        resource["authoredOn"] = authored
    return valid(resource)


def reshaped_dose_as_object(request: dict) -> dict:
    """doseAndRate as a single object instead of an array: invalid R4, but real clients send it."""
    changed = copy.deepcopy(request)
    dosage = changed["dosageInstruction"][0]
    dosage["doseAndRate"] = dosage["doseAndRate"][0]
    return changed


def reshaped_stu3_dose(request: dict) -> dict:
    """STU3-style dosageInstruction[].doseQuantity: invalid R4, but old clients send it."""
    changed = copy.deepcopy(request)
    dosage = changed["dosageInstruction"][0]
    dosage["doseQuantity"] = dosage.pop("doseAndRate")[0]["doseQuantity"]
    return changed


def bundle(resources: list[dict], bundle_type: str | None = "searchset") -> dict:
    result: dict[str, Any] = {"resourceType": "Bundle", "entry": [{"resource": r} for r in resources]}
    if bundle_type is not None:
        result["type"] = bundle_type
        return valid(result)
    return result  # no Bundle.type: invalid, but CDS clients send draftOrders like this


def operation_outcome() -> dict:
    return valid({"resourceType": "OperationOutcome",
                  "issue": [{"severity": "error", "code": "processing", "diagnostics": "search failed"}]})
