"""Try a patient: a test case, a cohort patient or a pasted FHIR R4 Bundle, under any version (drafts included),
with a chosen hook, draft order and evaluation date. The cards are built by the service's own `cards.py`, so they
are what an EHR would receive; the trace shows which rule fired on which values.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import render_template, request

from engine import fhir
from engine.decide import decide, facts_from_record, given_facts
from engine.errors import EvaluationError
from engine.model import Evaluation, Medication, Ruleset
from engine.orders import OrderDetails, medication_request
from webhook.cards import build_cards
from webhook.request import MAX_JSON_DEPTH, nesting_depth
from webhook.workbench.context import VersionInfo
from webhook.workbench.views import chosen_version, parse_date, sandbox, snapshot, today, version_choices, workbench

ORDER_HOOKS = ("order-select", "order-sign", "medication-prescribe")
DEFAULT_PATIENT = "example-patient"


class ScenarioError(ValueError):
    """The scenario cannot be evaluated as given; the message says what to change."""


@dataclass
class Scenario:
    """What is evaluated: the record (None for a case written as facts), written facts, date, hook, drafts."""

    label: str
    resources: list[dict] | None
    facts: dict[str, Any]
    date: dt.date
    hook: str
    drafts: list[dict] = field(default_factory=list)


@dataclass
class Outcome:
    scenario: Scenario
    evaluation: Evaluation
    cards: list[dict]
    sources: dict[str, str]
    patient_id: str


# --- where the patient comes from ------------------------------------------------------------------


def test_case(ruleset: Ruleset, name: str) -> dict:
    case = next((c for c in ruleset.tests if c["name"] == name), None)
    if case is None:
        raise ScenarioError(f"{ruleset.ref} has no test case named {name!r}")
    return case


def _bundle_file(ruleset: Ruleset, relative: str) -> list[dict]:
    return fhir.resources_from(json.loads((Path(ruleset.source_file).parent / relative).read_text(encoding="utf-8")))


def from_case(ruleset: Ruleset, case: dict) -> tuple[list[dict] | None, dict, dt.date, list[dict] | None]:
    """A test case's record (or None when written as facts), facts, date and draft orders (None: none given)."""
    resources = _bundle_file(ruleset, case["fhir"]) if "fhir" in case else None
    drafts = _bundle_file(ruleset, case["draft_orders"]) if "draft_orders" in case else None
    return resources, dict(case.get("facts", {})), parse_date(str(case["date"]), today()), drafts


def parse_bundle(text: str, what: str) -> list[dict]:
    """The resources in pasted JSON; nesting is bounded as in a hook request, since what reads it recurses."""
    too_deep = ScenarioError(f"the {what} nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ScenarioError(f"the {what} is not JSON: {error.msg} at line {error.lineno}, column {error.colno}") \
            from None
    except RecursionError:
        raise too_deep from None
    if nesting_depth(text.encode("utf-8", "surrogatepass")) > MAX_JSON_DEPTH:
        raise too_deep
    resources = fhir.resources_from(document)
    if not resources:
        raise ScenarioError(f"the {what} holds no FHIR resources (expected a Bundle, a resource or a list)")
    return resources


def draft_order(ruleset: Ruleset, patient: str, dose: float, times: float) -> dict:
    """A draft MedicationRequest of the ruleset's medication: `dose` per administration, `times` a day."""
    details = OrderDetails(f"Patient/{patient}", "draft", "workbench-draft", authored=today())
    return medication_request(_medication(ruleset), dose * times, details, per_day=times)


def _medication(ruleset: Ruleset) -> Medication:
    if ruleset.medication is None:
        raise ScenarioError(f"{ruleset.ref} names no medication to order")
    return ruleset.medication


def orders_from_facts(ruleset: Ruleset, mapping: fhir.SiteMapping, facts: dict, patient: str,
                      on: dt.date) -> tuple[list[dict], list[dict]]:
    """For a case written as facts: the active and draft orders those facts describe (through the mapping's fact
    roles), so that suggestions to change or stop them can be shown."""
    concept = mapping.medications.get(ruleset.medication.concept) if ruleset.medication else None
    if concept is None:
        return [], []
    roles = concept.facts

    def order(id_role: str, dose_role: str, status: str, start: Any) -> list[dict]:
        order_id, dose = facts.get(roles.get(id_role, "")), facts.get(roles.get(dose_role, ""))
        if not isinstance(order_id, str) or not isinstance(dose, (int, float)):
            return []
        details = OrderDetails(f"Patient/{patient}", status, order_id, authored=parse_date(str(start or ""), on))
        return [medication_request(_medication(ruleset), dose, details)]

    active = order("active_order_id", "current_daily_dose", "active", facts.get(roles.get("start_date", "")))
    draft = order("draft_order_id", "draft_daily_dose", "draft", on)
    return active, draft


# --- the form -----------------------------------------------------------------------------------


def scenario_from_form(info: VersionInfo, form) -> Scenario:
    ruleset = info.ruleset
    source = form.get("source", "case")
    case_drafts: list[dict] | None = None
    hook = form.get("hook") or (ruleset.hooks or ["patient-view"])[0]
    if source == "case":
        case = test_case(ruleset, form.get("case", ""))
        resources, facts, date, case_drafts = from_case(ruleset, case)
        hook = form.get("hook") or case.get("hook") or hook
        label = f"test case “{case['name']}”"
    elif source == "cohort":
        patient = workbench().patient(form.get("patient", ""), ruleset.id)
        if patient is None:
            raise ScenarioError("choose a cohort patient")
        resources, facts, date = patient.resources, {}, patient.dates[0]
        label = f"{patient.name}: {patient.description}"
    else:
        resources, facts, date = parse_bundle(form.get("bundle", ""), "pasted Bundle"), {}, today()
        label = "pasted Bundle"
    date = parse_date(form.get("date"), date)
    return Scenario(label, resources, facts, date, hook, _drafts(ruleset, form, case_drafts))


def _drafts(ruleset: Ruleset, form, case_drafts: list[dict] | None) -> list[dict]:
    choice = form.get("draft", "source")
    if choice == "dose":
        try:
            dose, times = float(form.get("draft_dose", "")), float(form.get("draft_times", "") or 1)
        except ValueError:
            raise ScenarioError("the draft order needs a dose and how many times a day") from None
        if dose <= 0 or times <= 0:
            raise ScenarioError("the draft order's dose and times a day must be above zero")
        return [draft_order(ruleset, DEFAULT_PATIENT, dose, times)]
    if choice == "json":
        return [r for r in parse_bundle(form.get("draft_json", ""), "draft order")
                if r.get("resourceType") == "MedicationRequest"]
    if choice == "none":
        return []
    return case_drafts or []


def evaluate(info: VersionInfo, scenario: Scenario) -> Outcome:
    """Facts as the service would extract them, the evaluation, and the cards the service would answer."""
    ruleset, mapping = info.ruleset, snapshot().mapping
    if mapping is None:
        raise ScenarioError("the site mapping does not load; see the rulesets page")
    order_hook = scenario.hook in ORDER_HOOKS
    drafts = scenario.drafts if order_hook else []
    if scenario.resources is not None:
        record = fhir.resources_as_of(scenario.resources, scenario.date)
        facts = facts_from_record(mapping, record, scenario.date, drafts if order_hook else None,
                                  given=scenario.facts)
        known = [r for r in record if r.get("resourceType") == "MedicationRequest"]
        patient_id = next((r.get("id") for r in record if r.get("resourceType") == "Patient" and r.get("id")),
                          DEFAULT_PATIENT)
    else:
        patient_id, facts = DEFAULT_PATIENT, given_facts(scenario.facts)
        known, written_drafts = orders_from_facts(ruleset, mapping, scenario.facts, patient_id, scenario.date)
        if drafts:  # only the draft orders are read from FHIR; nothing else was looked for
            from_drafts = facts_from_record(mapping, [], scenario.date, drafts, supplied=())
            facts.facts.update(from_drafts.facts)
            facts.sources.update(from_drafts.sources)
        else:
            drafts = written_drafts if order_hook else []
    try:
        evaluation = decide(sandbox(), ruleset, facts, scenario.date, scenario.hook)
    except EvaluationError as error:
        raise ScenarioError(f"the evaluation failed: {error}") from None
    cards = build_cards(evaluation, ruleset, patient_id, drafts, known)
    return Outcome(scenario, evaluation, cards, facts.sources, patient_id)


def try_patient() -> tuple[str, int]:
    info = chosen_version(request.values.get("version"))
    form = request.values
    outcome, problem = None, ""
    if info is not None and form.get("run"):
        try:
            outcome = evaluate(info, scenario_from_form(info, form))
        except (ScenarioError, OSError) as error:
            problem = str(error)
    page = render_template("try.html", info=info, versions=version_choices(), form=form, outcome=outcome,
                           problem=problem, patients=workbench().cohort(info.ruleset_id if info else None),
                           order_hooks=ORDER_HOOKS)
    return page, 400 if problem else 200
