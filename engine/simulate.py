"""A therapy timeline: evaluate a patient day by day from day 0 and accept every suggestion, as a prescriber would.

Each day sees the record as it stood that day (`fhir.resources_as_of`) plus the orders the simulation itself has
written; a `create` suggestion becomes an active order from that day, an `update` replaces the active order with
one at the new dose from that day (so the record shows when the dose changed), a `stop` stops it, a `hold` puts
it on hold and a `restart` replaces the held order with an active one at the new dose. The record's
own orders for the ruleset's medication that start on or after day 0 are set aside: from day 0 the simulation
writes the orders. Nothing here knows a protocol: the medication comes from `ruleset.medication`, the orders are
FHIR R4 MedicationRequests read back through the site mapping like any other.
"""
from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from . import fhir
from .decide import decide, facts_from_record
from .model import Decision, Ruleset, Suggestion
from .orders import OrderDetails, medication_request, tidy
from .runtime import Engine

# Accepted in this order on one day: a stop or hold on the same day as a change wins.
HELD = "on-hold"  # FHIR R4 MedicationRequest.status of a held order
_ACTION_ORDER = {"create": 0, "update": 1, "restart": 1, "hold": 2, "stop": 3}


@dataclass
class Day:
    """One evaluated day: what the rules saw and decided, and the dose before and after accepting."""

    date: dt.date
    day: int  # days since day 0
    decisions: list[Decision]
    facts: dict[str, Any]  # the evaluation's facts (inputs used and derived)
    missing: dict[str, str]
    fired: list[str]
    dose_before: float | None  # daily dose of the active order when the day was evaluated; None: no order
    dose: float | None  # after accepting the day's suggestions
    applied: list[str] = field(default_factory=list)  # what was accepted, in words

    @property
    def topics(self) -> list[str]:
        return [d.topic for d in self.decisions]


def simulate(ruleset: Ruleset, mapping: fhir.SiteMapping, resources: list[dict[str, Any]], day0: dt.date,
             days: int = 50, hook: str = "patient-view", engine: Engine | None = None) -> list[Day]:
    """Days 0..`days` of the patient under `ruleset`, every suggestion accepted on the day it is made."""
    engine = engine or Engine()
    if ruleset.medication is None:
        raise ValueError(f"{ruleset.ref} names no medication: there is no therapy to simulate")
    concept = ruleset.medication.concept
    record = fhir.resources_from(resources)
    orders = Orders(ruleset, mapping, _patient_reference(record),
                    [r for r in fhir.resources_as_of(record, day0) if _is_ours(mapping, concept, r)])
    record = [r for r in record if not _is_ours(mapping, concept, r)]
    timeline = []
    for offset in range(days + 1):
        on = day0 + dt.timedelta(days=offset)
        facts = facts_from_record(mapping, fhir.resources_as_of(record, on) + orders.resources(), on)
        evaluation = decide(engine, ruleset, facts, on, hook)
        before = orders.active_dose()
        suggestions = sorted((d.suggestion for d in evaluation.decisions if d.suggestion),
                             key=lambda s: _ACTION_ORDER.get(s.action, 9))
        applied = [text for text in (orders.accept(s, on) for s in suggestions) if text]
        timeline.append(Day(on, offset, evaluation.decisions, evaluation.facts, evaluation.missing,
                            evaluation.fired_rules, before, orders.active_dose(), applied))
    return timeline


def _is_ours(mapping: fhir.SiteMapping, concept: str, resource: dict[str, Any]) -> bool:
    return (resource.get("resourceType") == "MedicationRequest" and concept in mapping.medications
            and fhir.draft_orders_mention(mapping, concept, [resource]))


def _patient_reference(record: list[dict[str, Any]]) -> str:
    patient = next((r for r in record if r.get("resourceType") == "Patient" and r.get("id")), None)
    return f"Patient/{patient['id']}" if patient else "Patient/simulated"


class Orders:
    """The medication's orders from day 0 on: the ones in effect then, and those written by accepting suggestions."""

    def __init__(self, ruleset: Ruleset, mapping: fhir.SiteMapping, patient: str,
                 existing: list[dict[str, Any]]) -> None:
        assert ruleset.medication is not None  # simulate() refuses a ruleset without one
        self.ruleset, self.medication, self.mapping, self.patient = ruleset, ruleset.medication, mapping, patient
        self.orders = [copy.deepcopy(o) for o in existing]
        self.written = 0

    def resources(self) -> list[dict[str, Any]]:
        return self.orders

    def active(self) -> dict[str, Any] | None:
        """The newest order that is active (the record's own statuses count as the site mapping says)."""
        current = [o for o in self.orders if o.get("status") in self.mapping.current_statuses]
        return current[-1] if current else None

    def active_dose(self) -> float | None:
        """The daily dose being taken: none while the order is held."""
        order = self.active()
        return _daily_dose(order) if order and order.get("status") != HELD else None

    def accept(self, suggestion: Suggestion, on: dt.date) -> str:
        """Carry out one suggestion; what was done, in words ("" when there was nothing to do)."""
        if suggestion.action == "create":
            return self._create(suggestion.daily_dose, on)
        if suggestion.action == "update":
            return self._update(suggestion, on)
        if suggestion.action == "stop":
            return self._stop(on)
        if suggestion.action == "hold":
            return self._hold()
        if suggestion.action == "restart":
            return self._restart(suggestion.daily_dose, on)
        return ""

    def _create(self, daily: float | None, on: dt.date) -> str:
        if daily is None:
            return ""
        current = self.active()
        if current is not None:
            return self._change(current, daily, on)
        self.orders.append(self._new_order(daily, on))
        return f"started {_show(daily)} {self._unit()}/day"

    def _update(self, suggestion: Suggestion, on: dt.date) -> str:
        current = self.active()
        if current is None or suggestion.daily_dose is None:
            return ""
        return self._change(current, suggestion.daily_dose, on)

    def _change(self, current: dict[str, Any], daily: float, on: dt.date) -> str:
        """A new dose is a new order from today; the old one is completed (so the dose change has a date)."""
        before = _daily_dose(current)
        if before is not None and abs(before - daily) < 1e-9:
            return ""
        _end(current, "completed", on - dt.timedelta(days=1))
        self.orders.append(self._new_order(daily, on))
        return f"changed {_show(before)} -> {_show(daily)} {self._unit()}/day"

    def _stop(self, on: dt.date) -> str:
        current = self.active()
        if current is None:
            return ""
        _end(current, "stopped", on)
        return f"stopped {_show(_daily_dose(current))} {self._unit()}/day"

    def _hold(self) -> str:
        current = self.active()
        if current is None or current.get("status") == HELD:
            return ""
        current["status"] = HELD
        return f"held {_show(_daily_dose(current))} {self._unit()}/day"

    def _restart(self, daily: float | None, on: dt.date) -> str:
        """The held order is completed the day before and a new active order starts today at the new dose."""
        current = self.active()
        if current is None or current.get("status") != HELD or daily is None:
            return ""
        _end(current, "completed", on - dt.timedelta(days=1))
        self.orders.append(self._new_order(daily, on))
        return f"restarted at {_show(daily)} {self._unit()}/day (held at {_show(_daily_dose(current))})"

    def _unit(self) -> str:
        return self.medication.dose_unit

    def _new_order(self, daily: float, on: dt.date) -> dict[str, Any]:
        self.written += 1
        details = OrderDetails(self.patient, "active", f"simulated-{self.written}", authored=on)
        order = medication_request(self.medication, daily, details)
        if not fhir.draft_orders_mention(self.mapping, self.medication.concept, [order]):
            raise ValueError(f"{self.ruleset.ref}: the site mapping does not recognise an order for "
                             f"{self.medication.display!r}; add a code or name pattern for it")
        return order


def _end(order: dict[str, Any], status: str, last_day: dt.date) -> None:
    order["status"] = status
    for dosage in order.get("dosageInstruction") or []:
        repeat = dosage.setdefault("timing", {}).setdefault("repeat", {})
        repeat.setdefault("boundsPeriod", {})["end"] = last_day.isoformat()


def _daily_dose(order: dict[str, Any]) -> float | None:
    """Dose x frequency per day of a simulation-shaped order (one dosage, period in days); None if not that shape."""
    try:
        dosage = order["dosageInstruction"][0]
        value = dosage["doseAndRate"][0]["doseQuantity"]["value"]
        repeat = dosage["timing"]["repeat"]
        if repeat.get("periodUnit", "d") != "d":
            return None
        return tidy(value * repeat.get("frequency", 1) / repeat.get("period", 1))
    except (KeyError, IndexError, TypeError):
        return None


def _show(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"
