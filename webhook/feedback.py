"""Feedback on cards: `POST /cds-services/<id>/feedback`, stored idempotently.

Feedback is taken only for cards the service itself issued (the audit keeps every card shown, with its service):
anything else is a 404 naming the card, and nothing of that request is stored.
The same feedback (service, card, outcome, outcomeTimestamp) may arrive more than once; it is stored once, the
timestamp must be a FHIR instant and is kept in UTC, so the same instant written with another offset is the same.
The spec defines no response body: we answer 200 with `{}`.

Without authentication a web page could post feedback through a browser on this machine and skew the outcomes
the pharmacists read, so what a browser marks as another site's is refused (403), and so is any body but JSON
(415): a page may send text/plain without a CORS preflight. An EHR's server sends neither Origin nor
Sec-Fetch-Site, and its JSON passes. With authentication the bearer token already needs a preflight.
"""
from __future__ import annotations

from flask import Blueprint, current_app, request
from sqlalchemy.exc import SQLAlchemyError

from store import Store, utc_instant
from webhook import hosts
from webhook.outcome import HookError, bad_request, not_found
from webhook.request import load_json, read_body, validate

bp = Blueprint("feedback", __name__)


@bp.post("/cds-services/<service_id>/feedback")
def receive(service_id: str) -> dict:
    state = current_app.extensions["cdsrules"]
    if not state.authenticated:
        _refuse_web_pages()
    service = state.service(service_id)
    document = load_json(read_body())
    validate(document, "feedbackRequest")
    _refuse_timestamps_that_are_not_instants(document["feedback"])
    try:
        _refuse_cards_not_issued(state.store, service.id, [item["card"] for item in document["feedback"]])
        for item in document["feedback"]:
            state.store.add_feedback(service.id, item)
    except SQLAlchemyError:
        raise HookError(503, "Feedback could not be stored; please send it again.") from None
    return {}


def _refuse_web_pages() -> None:
    forged = hosts.cross_site(current_app.extensions["cdsrules.hosts"])
    if forged:
        raise HookError(403, forged)
    if not request.is_json:
        raise HookError(415, "Feedback must be sent as JSON (Content-Type: application/json).")


def _refuse_timestamps_that_are_not_instants(items: list[dict]) -> None:
    """The schema checks the form of each outcomeTimestamp; this, that it names a real instant (not 30 February)."""
    for index, item in enumerate(items):
        try:
            utc_instant(item["outcomeTimestamp"])
        except ValueError as error:
            raise bad_request(f"feedback/{index}/outcomeTimestamp is not a FHIR instant: {error}") from None


def _refuse_cards_not_issued(store: Store, service_id: str, cards: list[str]) -> None:
    issued_by = store.card_issuers(cards)
    for card in cards:
        if issued_by.get(card) != service_id:
            raise not_found(f"The service '{service_id}' issued no card '{card}'; feedback is taken only for "
                            "the cards a service issued.")
