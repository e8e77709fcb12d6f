"""FHIR R4 MedicationRequests for the protocol's drug: the one place an order is written.

The card's pre-filled order, the simulated prescriber's orders and the workbench's draft orders are all made here,
from the ruleset's `medication` (its display, coding, dose unit, route and administrations per day), so that what
the prescriber is offered and what the simulation reads back are the same resource. Elements with no value are
left out rather than written empty (CDS Hooks and FHIR forbid empty elements).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from .model import Medication

UCUM = "http://unitsofmeasure.org"


@dataclass(frozen=True)
class OrderDetails:
    """What an order carries besides its drug and dose: who it is for, its state, and who writes it when."""

    patient_ref: str  # "Patient/<id>"
    status: str = "draft"
    order_id: str | None = None
    authored: dt.date | None = None  # also the first day of the dosage
    coding: tuple[dict[str, Any], ...] = ()  # the site's coding for the drug, when the EHR's own is known
    requester: str | None = None  # a Practitioner or PractitionerRole reference


def medication_request(medication: Medication, daily_dose: float, details: OrderDetails,
                       per_day: float | None = None) -> dict[str, Any]:
    """A MedicationRequest for `daily_dose` a day, given in `per_day` administrations (default: the ruleset's)."""
    instruction = dosage(medication, daily_dose, per_day)
    if details.authored:
        instruction["timing"]["repeat"]["boundsPeriod"] = {"start": details.authored.isoformat()}
    concept: dict[str, Any] = {"text": medication.display}
    coding = details.coding or medication.coding
    if coding:
        concept = {"coding": [dict(c) for c in coding], **concept}
    order: dict[str, Any] = {"resourceType": "MedicationRequest"}
    if details.order_id:
        order["id"] = details.order_id
    order.update({"status": details.status, "intent": "order", "medicationCodeableConcept": concept,
                  "subject": {"reference": details.patient_ref}})
    if details.authored:
        order["authoredOn"] = details.authored.isoformat()
    if is_requester(details.requester):
        order["requester"] = {"reference": details.requester}
    order["dosageInstruction"] = [instruction]
    return order


def dosage(medication: Medication, daily_dose: float, per_day: float | None = None) -> dict[str, Any]:
    """One dosage instruction: the daily dose split into equal administrations, by the ruleset's route."""
    times = per_day or medication.frequency_per_day
    per_dose = tidy(daily_dose / times)
    route = medication.route
    instruction: dict[str, Any] = {
        "text": f"{_number_text(per_dose)} {medication.dose_unit}, "
                f"{route.get('display', 'as directed') if route else 'as directed'}, {_times(times)}",
        "timing": {"repeat": {"frequency": times, "period": 1, "periodUnit": "d"}},
    }
    if route:
        instruction["route"] = {"coding": [dict(route)], **({"text": route["display"]} if route.get("display")
                                                             else {})}
    instruction["doseAndRate"] = [{"doseQuantity": {"value": per_dose, "unit": medication.dose_unit,
                                                    "system": UCUM, "code": medication.dose_unit}}]
    return instruction


def with_dose(order: dict[str, Any], medication: Medication, daily_dose: float) -> dict[str, Any]:
    """A copy of an order, same id, its dosage replaced by `daily_dose` a day (the order given is left as it was).

    The timing's other elements (bounds, start date) are kept: only the dose and how often change."""
    base: dict[str, Any] = (order.get("dosageInstruction") or [{}])[0]
    new = dosage(medication, daily_dose)
    timing: dict[str, Any] = base["timing"] if isinstance(base.get("timing"), dict) else {}
    repeat: dict[str, Any] = timing["repeat"] if isinstance(timing.get("repeat"), dict) else {}
    new["timing"] = {**timing, "repeat": {**repeat, **new["timing"]["repeat"]}}
    return {**order, "dosageInstruction": [{**base, **new}]}


def is_requester(reference: str | None) -> bool:
    """A Practitioner or PractitionerRole writes orders (an EHR user may also be a patient or a relative)."""
    return isinstance(reference, str) and reference.startswith(("Practitioner/", "PractitionerRole/"))


def tidy(value: float) -> float | int:
    """A dose as a prescriber writes it: no float noise, and whole numbers without a decimal point."""
    value = round(value, 4)
    return int(value) if float(value).is_integer() else value


def _number_text(value: float | int) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _times(per_day: float) -> str:
    names: dict[float, str] = {1: "once daily", 2: "twice daily"}
    return names.get(per_day, f"{_number_text(tidy(per_day))} times daily")
