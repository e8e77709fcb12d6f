"""An evaluation's decisions -> CDS Hooks cards, with whole FHIR R4 MedicationRequests as suggestions.

One card per decision topic. Each card says which rule and ruleset version decided (a footer line and the
`cdsrules.provenance` extension) and, from the trace, the values and thresholds the rule compared; its source links
to the protocol's public record. A suggestion creates a new order (with the site's medication coding, dose, route,
frequency, start date, authoredOn and requester: an order a pharmacy system can take), updates the draft order
(same id) with the new dose, or updates the active order to `status: stopped`. A suggestion whose order cannot be
found, whose daily dose is not a positive number within the ruleset's maximum, or that would leave the order as it
is, is left out; the card stays. Nothing empty (null, "", [], {}) is ever emitted.
"""
from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.choice import VersionChoice
from engine.fhir import is_fhir_id
from engine.model import DOSED_ACTIONS, Comparison, Decision, Evaluation, Firing, Ruleset, Suggestion
from engine.orders import OrderDetails, medication_request, with_dose
from engine.runtime import SUMMARY_LIMIT
from engine.templates import escape_markdown

_OPERATORS = {"eq": "=", "ne": "≠", "gt": ">", "gte": "≥", "lt": "<", "lte": "≤", "in": "in"}


@dataclass(frozen=True)
class OrderContext:
    """What a new order carries besides its dose: the site's medication coding and who orders it, when."""

    coding: tuple[Mapping[str, str], ...] = ()  # from the site mapping's medication `order_coding`
    requester: str | None = None  # context.userId, e.g. "Practitioner/123"
    authored: dt.date | None = None  # the evaluation date: the order is written today and starts today


def build_cards(evaluation: Evaluation, ruleset: Ruleset, patient_id: str, draft_orders: list[dict],
                known_orders: list[dict], order: OrderContext | None = None,
                choice: VersionChoice | None = None) -> list[dict]:
    """Cards for the decisions, each topic once; `known_orders` are the MedicationRequests fetched or prefetched.
    `choice`: why this version decides (engine.choice), said in each card's provenance."""
    firings = {f.rule_id: f for f in evaluation.trace}
    order = order or OrderContext(authored=dt.date.fromisoformat(evaluation.evaluation_date))
    cards, topics = [], set()
    for decision in evaluation.decisions:
        if decision.topic in topics:
            continue
        topics.add(decision.topic)
        card = _card(decision, ruleset, evaluation, firings.get(decision.rule_id), choice)
        suggestion = _suggestion(decision.suggestion, ruleset, patient_id, draft_orders, known_orders, order)
        if suggestion:
            card["suggestions"] = [suggestion]
            card["selectionBehavior"] = "at-most-one"
        cards.append(strip_empty(card))
    return cards


def _card(decision: Decision, ruleset: Ruleset, evaluation: Evaluation, firing: Firing | None,
          choice: VersionChoice | None) -> dict:
    return {
        "uuid": str(uuid.uuid4()),
        "summary": shorten(decision.summary),
        "detail": _detail(decision, ruleset, evaluation, firing, choice),
        "indicator": decision.indicator,
        "source": {
            "label": ruleset.title,
            "url": _protocol_url(ruleset),
            "topic": {"system": ruleset.topic_system, "code": decision.topic, "display": topic_display(decision.topic)},
        },
        "overrideReasons": [_override_reason(c) for c in decision.override_reasons if c.get("code")],
        "links": [_link(link) for link in decision.links if link.get("url") and link.get("label")],
        "extension": {
            "cdsrules.provenance": {
                "ruleset": ruleset.id,
                "version": ruleset.version,
                "version_reason": choice.reason if choice else None,
                "rules": evaluation.fired_rules,
            }
        },
    }


def _protocol_url(ruleset: Ruleset) -> str | None:
    """The protocol's public record, from the ruleset's metadata; only an absolute http(s) URL is a link."""
    url = (ruleset.metadata.get("protocol") or {}).get("url")
    return url if isinstance(url, str) and url.startswith(("https://", "http://")) else None


def shorten(text: str, limit: int = SUMMARY_LIMIT) -> str:
    """One line of at most `limit` characters, cut at a word boundary when that loses little."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit * 0.6:
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "…"


def topic_display(topic: str) -> str:
    return topic.replace("-", " ").replace("_", " ").capitalize()


def _detail(decision: Decision, ruleset: Ruleset, evaluation: Evaluation, firing: Firing | None,
            choice: VersionChoice | None) -> str:
    parts = [decision.detail.strip()]
    basis = _basis(firing, ruleset, evaluation) if firing else []
    if basis:
        parts.append("**Basis**\n\n" + "\n".join(f"- {line}" for line in basis))
    footer = f"Rule `{decision.rule_id}` · ruleset {ruleset.id} {ruleset.version}"
    if choice and choice.in_effect != ruleset.version:
        footer += f" ({choice.reason})"  # an earlier version than today's decides: the clinician sees why
    parts.append(footer)
    return "\n\n".join(p for p in parts if p)


def _basis(firing: Firing, ruleset: Ruleset, evaluation: Evaluation) -> list[str]:
    """The measured values the deciding rule compared: value (with its date), threshold and its source.

    Comparisons of flags the ruleset derived itself (`treating = true`) are its inner workings, not the basis a
    clinician reviews, and are left out.
    """
    lines = []
    for c in firing.comparisons:
        measured = isinstance(c.actual, (int, float)) and not isinstance(c.actual, bool)
        if c.op in ("exists", "missing") or not (measured or c.threshold_ref) or not _held(c):
            continue  # a branch of an `any` that did not hold is not why the rule fired
        actual = escape_markdown(c.actual) if isinstance(c.actual, str) else _value(c.actual)  # a text from data
        lines.append(f"`{c.fact}` is {actual}{_observed(c.fact, ruleset, evaluation)}; the rule checks "
                     f"{_OPERATORS.get(c.op, c.op)} {_value(c.threshold)}{_threshold_source(c.threshold_ref, ruleset)}")
    return lines


_HOLDS = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "gt": lambda a, b: a > b,
          "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b,
          "in": lambda a, b: a in b}


def _held(comparison: Comparison) -> bool:
    """Whether the comparison held for the values it saw; one that cannot be judged is shown."""
    test = _HOLDS.get(comparison.op)
    try:
        return test is None or comparison.actual is None or bool(test(comparison.actual, comparison.threshold))
    except TypeError:
        return True


def _observed(fact: str, ruleset: Ruleset, evaluation: Evaluation) -> str:
    spec = ruleset.facts.get(fact)
    date = evaluation.facts.get(spec.observed_on) if spec and spec.observed_on else None
    return f" (observed {date})" if date else ""


def _threshold_source(ref: str | None, ruleset: Ruleset) -> str:
    if not ref:
        return ""
    kind, _, name = ref.partition(":")
    parameter = ruleset.parameters.get(name) if kind == "param" else None
    return f" (`{name}`, {parameter.source})" if parameter else f" (`{name}`)"


def _value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "—" if value is None else str(value)


def _override_reason(coding: dict) -> dict:
    return {"system": coding.get("system"), "code": coding["code"], "display": coding.get("display") or coding["code"]}


def _link(link: dict) -> dict:
    kind = link.get("type") if link.get("type") in ("absolute", "smart") else "absolute"
    found = {"label": link["label"], "url": link["url"], "type": kind}
    if kind == "smart" and link.get("appContext"):
        found["appContext"] = link["appContext"]
    return found


# --- suggestions ----------------------------------------------------------------------------


def _suggestion(suggestion: Suggestion | None, ruleset: Ruleset, patient_id: str, draft_orders: list[dict],
                known_orders: list[dict], order: OrderContext) -> dict | None:
    if suggestion is None:
        return None
    if suggestion.action in DOSED_ACTIONS and not dose_allowed(suggestion.daily_dose, ruleset):
        return None
    action = _action(suggestion, ruleset, patient_id, draft_orders, known_orders, order)
    if action is None:
        return None
    return {"label": shorten(suggestion.label, 200), "uuid": str(uuid.uuid4()), "isRecommended": True,
            "actions": [action]}


def _action(suggestion: Suggestion, ruleset: Ruleset, patient_id: str, draft_orders: list[dict],
            known_orders: list[dict], context: OrderContext) -> dict | None:
    if suggestion.action == "create":
        resource = new_order(ruleset, patient_id, suggestion.daily_dose, context)
        return {"type": "create", "description": suggestion.label, "resource": resource}
    if suggestion.action == "update":  # the draft being entered, else (patient-view) the active order
        order = _find(suggestion.order_id, draft_orders) or _find(suggestion.order_id, known_orders)
        if order is None:
            return None
        changed = with_dose(order, ruleset.medication, suggestion.daily_dose)
        if _same_dosing(order, changed):
            return None  # the order already says this: a suggestion that changes nothing is noise
        return {"type": "update", "description": suggestion.label, "resource": changed}
    if suggestion.action in _NEW_STATUS:  # the active or on-hold order, in its new status
        current = _find(suggestion.order_id, known_orders) or _find(suggestion.order_id, draft_orders)
        if current is None:
            return None
        resource = {**current, "status": _NEW_STATUS[suggestion.action]}
        if suggestion.action == "restart":
            resource = with_dose(resource, ruleset.medication, suggestion.daily_dose)
        return {"type": "update", "description": suggestion.label, "resource": resource}
    return None


# The status an order is given by each action that changes it (FHIR R4 MedicationRequest.status).
_NEW_STATUS = {"stop": "stopped", "hold": "on-hold", "restart": "active"}


def dose_allowed(daily_dose: float | None, ruleset: Ruleset) -> bool:
    """Defensive, after the engine's own guard: a positive finite dose not above the ruleset's maximum."""
    if not isinstance(daily_dose, (int, float)) or isinstance(daily_dose, bool):
        return False
    if not math.isfinite(daily_dose) or daily_dose <= 0:
        return False
    limit = ruleset.max_daily_dose
    return limit is None or daily_dose <= limit + 1e-9


def _find(order_id: str | None, orders: list[dict]) -> dict | None:
    if not order_id:
        return None
    wanted = order_id.removeprefix("MedicationRequest/")
    if not is_fhir_id(wanted):
        return None
    for order in orders:
        if order.get("resourceType") == "MedicationRequest" and order.get("id") == wanted:
            return order
    return None


def new_order(ruleset: Ruleset, patient_id: str, daily_dose: float, context: OrderContext | None = None) -> dict:
    """A draft MedicationRequest for the daily dose, starting on the day it is authored."""
    context = context or OrderContext()
    details = OrderDetails(f"Patient/{patient_id}", "draft", authored=context.authored,
                           coding=tuple(dict(c) for c in context.coding), requester=context.requester)
    return medication_request(ruleset.medication, daily_dose, details)


def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _same_dosing(order: dict, changed: dict) -> bool:
    """Whether the changed order doses as the order does: the same dose per administration, unit and timing."""
    def dosing(resource: dict) -> tuple:  # a draft is the client's: any element may be of the wrong shape
        instructions = resource.get("dosageInstruction")
        instruction = _mapping(instructions[0] if isinstance(instructions, list) and instructions else None)
        rates = instruction.get("doseAndRate")
        quantity = _mapping(_mapping(rates[0] if isinstance(rates, list) and rates else None).get("doseQuantity"))
        repeat = _mapping(_mapping(instruction.get("timing")).get("repeat"))
        return (quantity.get("value"), quantity.get("code") or quantity.get("unit"), repeat.get("frequency"),
                repeat.get("period"), repeat.get("periodUnit"))
    before = dosing(order)
    return bool(before) and before[0] is not None and before == dosing(changed)


def strip_empty(value: Any) -> Any:
    """The value without null, "", [] or {} anywhere (CDS Hooks forbids them in responses)."""
    if isinstance(value, dict):
        kept = {}
        for key, item in value.items():
            if isinstance(item, (dict, list)):  # only these change; the rest, most of a card, is kept as it is
                item = strip_empty(item)
            if not _empty(item):
                kept[key] = item
        return kept
    if isinstance(value, list):
        return [item for item in map(strip_empty, value) if not _empty(item)]
    return value


def _empty(value: Any) -> bool:
    # Only a false value can be empty: one test of truth passes most values, before three comparisons that each
    # build an empty container.
    return value is None or (not value and (value == "" or value == [] or value == {}))
