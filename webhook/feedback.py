"""Feedback on cards: `POST /cds-services/<id>/feedback`, stored idempotently.

The same feedback (service, card, outcome, outcomeTimestamp) may arrive more than once; it is stored once.
The spec defines no response body: we answer 200 with `{}`.
"""
from __future__ import annotations

from flask import Blueprint, current_app, request
from sqlalchemy.exc import SQLAlchemyError

from webhook.outcome import HookError
from webhook.request import load_json, validate

bp = Blueprint("feedback", __name__)


@bp.post("/cds-services/<service_id>/feedback")
def receive(service_id: str) -> dict:
    state = current_app.extensions["cdsrules"]
    service = state.service(service_id)
    document = load_json(request.get_data(cache=False))
    validate(document, "feedbackRequest")
    try:
        for item in document["feedback"]:
            state.store.add_feedback(service.id, item)
    except SQLAlchemyError:
        raise HookError(503, "Feedback could not be stored; please send it again.") from None
    return {}
