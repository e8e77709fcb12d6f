"""Feedback on cards: `POST /cds-services/<id>/feedback`, stored idempotently.

The same feedback (service, card, outcome, outcomeTimestamp) may arrive more than once; it is stored once.
The spec defines no response body: we answer 200 with `{}`.

Without authentication a web page could post feedback through a browser on this machine and skew the outcomes
the pharmacists read, so what a browser marks as another site's is refused (403), and so is any body but JSON
(415): a page may send text/plain without a CORS preflight. An EHR's server sends neither Origin nor
Sec-Fetch-Site, and its JSON passes. With authentication the bearer token already needs a preflight.
"""
from __future__ import annotations

from flask import Blueprint, current_app, request
from sqlalchemy.exc import SQLAlchemyError

from webhook import hosts
from webhook.outcome import HookError
from webhook.request import load_json, validate

bp = Blueprint("feedback", __name__)


@bp.post("/cds-services/<service_id>/feedback")
def receive(service_id: str) -> dict:
    state = current_app.extensions["cdsrules"]
    if not state.authenticated:
        _refuse_web_pages()
    service = state.service(service_id)
    document = load_json(request.get_data(cache=False))
    validate(document, "feedbackRequest")
    try:
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
