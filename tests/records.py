"""A patient as the EHR holds it, and the requests an EHR sends: the records the tests and the benchmarks use."""
from __future__ import annotations

import datetime as dt
import uuid

from tests.fhir_server import FhirData

# --- a patient as the EHR holds it ------------------------------------------------------------


def observation(ident: str, patient: str, loinc: str, when: dt.date, value: float, unit: str) -> dict:
    return {"resourceType": "Observation", "id": ident, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
            "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": when.isoformat(),
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}


def hetrombopag_order(ident: str, patient: str, daily_mg: float, status: str, authored: dt.date) -> dict:
    return {"resourceType": "MedicationRequest", "id": ident, "status": status, "intent": "order",
            "medicationCodeableConcept": {"text": "Hetrombopag olamine tablets"},
            "subject": {"reference": f"Patient/{patient}"}, "authoredOn": authored.isoformat(),
            "dosageInstruction": [{"text": f"{daily_mg:g} mg orally once daily",
                                   "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                                   "doseAndRate": [{"doseQuantity": {"value": daily_mg, "unit": "mg",
                                                                     "system": "http://unitsofmeasure.org",
                                                                     "code": "mg"}}]}]}


def patient_record(today: dt.date, patient: str = "p1", platelets: float = 120.0, on_therapy: bool = True) -> list:
    """A child with neuroblastoma after autologous HSCT; on hetrombopag 5 mg for 20 days if `on_therapy`."""
    day = lambda n: today - dt.timedelta(days=n)  # noqa: E731
    resources = [
        {"resourceType": "Patient", "id": patient, "birthDate": today.replace(year=today.year - 8).isoformat(),
         "gender": "female"},
        observation("wt1", patient, "29463-7", day(2), 25, "kg"),
        observation("plt1", patient, "777-3", day(1), platelets, "10*9/L"),
        observation("plt0", patient, "777-3", day(15), 30, "10*9/L"),
        observation("alt1", patient, "1742-6", day(1), 20, "U/L"),
        observation("ast1", patient, "1920-8", day(1), 30, "U/L"),
        observation("bil1", patient, "14631-6", day(1), 8, "umol/L"),
        {"resourceType": "Observation", "id": "ecog1", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": "89247-1"}]},
         "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": day(3).isoformat(), "valueInteger": 1},
        {"resourceType": "Condition", "id": "nb1", "subject": {"reference": f"Patient/{patient}"},
         "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                        "code": "active"}]},
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "432328008"}]},
         "onsetDateTime": day(400).isoformat()},
        {"resourceType": "Procedure", "id": "hsct1", "status": "completed",
         "subject": {"reference": f"Patient/{patient}"},
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "709115004"}]},
         "performedDateTime": day(60).isoformat()},
    ]
    if on_therapy:
        resources.append(hetrombopag_order("mr-active", patient, 5, "active", day(20)))
    return resources


def order_sign_request(patient: str, drafts: list[dict], **extra) -> dict:
    return {"hook": "order-sign", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/dr1", "patientId": patient,
                        "draftOrders": {"resourceType": "Bundle", "type": "collection",
                                        "entry": [{"resource": d} for d in drafts]}}, **extra}


def prefetch_for(templates: dict[str, str], server: FhirData, patient: str) -> dict:
    """What an EHR sends: each template's tokens filled and the query answered from its own FHIR data."""
    prefetch = {}
    for key, template in templates.items():
        status, body = server.answer("/fhir/" + template.replace("{{context.patientId}}", patient))
        prefetch[key] = body if status == 200 else None
    return prefetch


# --- an adult with immune thrombocytopenia (eltrombopag-itp) ------------------------------------

SNOMED, LOINC = "http://snomed.info/sct", "http://loinc.org"


def itp_record(today: dt.date, patient: str = "itp1", age: int = 30, platelets: float = 20) -> list[dict]:
    """An adult with chronic ITP (SNOMED), ancestry recorded as White, a recent low platelet count, a normal ALT."""
    def observation(ident: str, code: str, value: float, unit: str, days_ago: int = 1) -> dict:
        return {"resourceType": "Observation", "id": ident, "status": "final",
                "code": {"coding": [{"system": LOINC, "code": code}]},
                "subject": {"reference": f"Patient/{patient}"},
                "effectiveDateTime": (today - dt.timedelta(days=days_ago)).isoformat(),
                "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}

    return [
        {"resourceType": "Patient", "id": patient, "gender": "male",
         "birthDate": today.replace(year=today.year - age).isoformat(),
         "extension": [{"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race", "extension": [
             {"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2106-3"}},
             {"url": "text", "valueString": "White"}]}]},
        {"resourceType": "Condition", "id": "itp", "subject": {"reference": f"Patient/{patient}"},
         "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                        "code": "active"}]},
         "code": {"coding": [{"system": SNOMED, "code": "32273002"}]},
         "onsetDateTime": (today - dt.timedelta(days=400)).isoformat()},
        observation("plt", "777-3", platelets, "10*9/L"),
        observation("alt", "1742-6", 22, "U/L"),
    ]


def eltrombopag_draft(patient: str, daily_mg: float, today: dt.date) -> dict:
    return {"resourceType": "MedicationRequest", "id": "draft-elt", "status": "draft", "intent": "order",
            "medicationCodeableConcept": {"text": "Eltrombopag tablets"},
            "subject": {"reference": f"Patient/{patient}"}, "authoredOn": today.isoformat(),
            "dosageInstruction": [{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                                   "doseAndRate": [{"doseQuantity": {"value": daily_mg, "unit": "mg",
                                                                     "system": "http://unitsofmeasure.org",
                                                                     "code": "mg"}}]}]}
