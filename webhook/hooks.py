"""Discovery and service calls: the path of one decision, top to bottom.

request -> (order hooks: is our drug in the draft orders? if not, no cards) -> prefetch or FHIR fallback ->
the patient's own resources, each once (engine.record) -> facts -> the version that decides and its evaluation
(engine.choice, engine.decide) -> cards -> audit record -> response.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from typing import TYPE_CHECKING

from flask import Blueprint, current_app

from engine import fhir
from engine.audit import decision_summary
from engine.choice import VersionChoice, decide_in_effect
from engine.decide import facts_from_record
from engine.model import Evaluation, Ruleset
from engine.record import OtherPatientError, Record, own_record
from engine.versions import RulesetVersions
from store import AuditRecord
from webhook import metrics
from webhook.auth import current_issuer
from webhook.cards import OrderContext, build_cards
from webhook.outcome import HookError, precondition_failed
from webhook.prefetch import gather, is_safe_fetch_target
from webhook.privacy import pseudonym
from webhook.request import HookRequest, normalise_resource, parse_hook_request, read_body
from webhook.services import Service

if TYPE_CHECKING:
    from webhook.state import Runtime

log = logging.getLogger(__name__)

bp = Blueprint("hooks", __name__)


def runtime() -> Runtime:
    return current_app.extensions["cdsrules"]


@bp.get("/cds-services")
def discovery() -> dict:
    """Every service, with the source attributes of the version in effect today (none when none is)."""
    state = runtime()
    rules, today = state.require_rules(), state.clock()
    return {"services": [s.discovery(rules.catalog.select(s.ruleset.id, today)) for s in rules.services.values()]}


@bp.post("/cds-services/<service_id>")
def call(service_id: str) -> dict:
    started = time.perf_counter()
    state = runtime()
    service = state.service(service_id)
    hook_request = parse_hook_request(read_body(), service.hook)
    today = state.clock()
    versions = state.catalog.rulesets.get(service.ruleset.id)
    ruleset = versions.select(today) if versions else None
    if versions is None or ruleset is None:
        log.warning("%s: no released version of %s is in effect on %s; no cards", service.id, service.ruleset.id,
                    today)
        cards, evaluation, choice = [], None, None
    else:
        cards, evaluation, choice = answer(service, versions, ruleset, hook_request, today)
    decided_by = choice.ruleset if choice else ruleset
    _audit(service, decided_by, hook_request, cards, evaluation, started, choice)
    metrics.record_decisions(service.id, decided_by and decided_by.ref, [c["source"]["topic"]["code"] for c in cards])
    return {"cards": cards}


def answer(service: Service, versions: RulesetVersions, ruleset: Ruleset, hook_request: HookRequest,
           today: dt.date) -> tuple[list[dict], Evaluation | None, VersionChoice | None]:
    """The cards for one call, the evaluation behind them and the version chosen to decide (None when nothing was
    evaluated). `ruleset` is the version in effect today; the version that decides may be an earlier one
    (engine.choice), chosen from the same facts."""
    state = runtime()
    orders = _own(list(hook_request.draft_orders), hook_request, "draft order").resources
    if hook_request.is_order_hook and not fhir.draft_orders_mention(state.mapping, ruleset.medication.concept, orders):
        return [], None, None  # an order hook about other drugs: nothing to say, nothing fetched
    gathered = gather(service.prefetch, hook_request, state.fetcher, _may_fetch_from)
    sent = [normalise_resource(r) for payload in gathered.payloads.values() for r in fhir.resources_from(payload)]
    resources = _own(sent, hook_request, "resource").resources
    facts = facts_from_record(state.mapping, resources, today, orders if hook_request.is_order_hook else None,
                              gathered.supplied)
    chosen = decide_in_effect(state.engine, versions, facts, today, hook_request.hook)
    assert chosen is not None  # `ruleset` is in effect today in these same versions
    choice, evaluation = chosen
    ruleset = choice.ruleset
    known_orders = [r for r in resources if r.get("resourceType") == "MedicationRequest"]
    medication = state.mapping.medications.get(ruleset.medication.concept)
    order = OrderContext(medication.order_coding if medication else (), hook_request.context.get("userId"), today)
    cards = build_cards(evaluation, ruleset, hook_request.patient_id, orders, known_orders, order, choice)
    return cards, evaluation, choice


def _own(resources: list[dict], hook_request: HookRequest, kind: str) -> Record:
    """Only the patient's own resources, each once (engine.record); 412 if the Patient itself is another's."""
    try:
        record = own_record(resources, hook_request.patient_id)
    except OtherPatientError as exc:
        raise precondition_failed(f"The record sent is not this patient's: {exc}.") from None
    if record.other_patients:
        log.warning("hookInstance=%s patient=%s: %d %s(s) about another patient or none ignored (%s)",
                    hook_request.hook_instance, pseudonym(hook_request.patient_id), len(record.other_patients), kind,
                    ", ".join(record.other_patients[:5]))
    if record.conflicting:
        log.warning("hookInstance=%s patient=%s: copies of %s differ and none is newer; both ignored",
                    hook_request.hook_instance, pseudonym(hook_request.patient_id), ", ".join(record.conflicting[:5]))
    return record


def _may_fetch_from(url: str) -> bool:
    """With auth on, only the fhirServers allowlisted for the client; without, the configured list or any.
    Never a link-local or cloud metadata address, whatever a list says (SSRF)."""
    if not is_safe_fetch_target(url):
        return False
    issuer = current_issuer()
    if issuer is not None:
        return issuer.allows_fhir_server(url)
    if runtime().authenticated:
        return False
    allowed = runtime().fhir_servers
    return allowed is None or url.rstrip("/") in {u.rstrip("/") for u in allowed}


def _audit(service: Service, ruleset: Ruleset | None, hook_request: HookRequest, cards: list[dict],
           evaluation: Evaluation | None, started: float, choice: VersionChoice | None = None) -> None:
    """Record the call before it is answered: what was decided, from which facts, by which exact rules.

    A call whose record cannot be written is not answered (503): advice given without its record would be
    advice no one can account for later."""
    state = runtime()
    versions = state.catalog.rulesets.get(ruleset.id) if ruleset else None
    release = versions.releases.get(ruleset.version) if versions else None
    decided_by: dict[str, str] = {}  # topic -> the rule whose decision made its card (the first, as cards.py does)
    for decision in evaluation.decisions if evaluation else []:
        decided_by.setdefault(decision.topic, decision.rule_id)
    topics = [c["source"]["topic"]["code"] for c in cards]
    record = AuditRecord(
        decision_id=str(uuid.uuid4()),
        hook_instance=hook_request.hook_instance,
        service=service.id,
        hook=hook_request.sent_hook,
        evaluated_hook=hook_request.hook,
        patient_id=hook_request.patient_id,
        evaluation_date=evaluation.evaluation_date if evaluation else state.clock().isoformat(),
        ruleset=service.ruleset.id,
        version=ruleset.version if ruleset else "none in effect",
        manifest_sha256=release.sha256 if release else None,
        facts=evaluation.facts if evaluation else None,
        missing=evaluation.missing if evaluation else {},
        fired_rules=evaluation.fired_rules if evaluation else [],
        decisions=[decision_summary(d) for d in evaluation.decisions] if evaluation else [],
        cards=[{"uuid": c["uuid"], "topic": t, "rule_id": decided_by.get(t)}
               for c, t in zip(cards, topics, strict=True)],
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
        version_choice=choice.as_dict() if choice else None,
    )
    if not state.store.add_audit(record):
        metrics.count_audit_failure()
        raise HookError(503, "The decision could not be recorded, so it is not given; please try again.")
    log.info("%s %s@%s hookInstance=%s decision=%s patient=%s rules=%s cards=%s %.1f ms", service.id,
             record.ruleset, record.version, hook_request.hook_instance, record.decision_id,
             pseudonym(hook_request.patient_id), ",".join(record.fired_rules) or "-", ",".join(topics) or "-",
             record.latency_ms)
