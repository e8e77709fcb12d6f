"""Feedback on cards, kept as sent.

Feedback is idempotent (a unique key over service, card, outcome and timestamp, the timestamp in UTC so that one
instant written with different offsets is one key).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from store.database import Database
from store.tables import feedback
from store.values import now, utc_instant

# The keys of a feedback item in CDS Hooks 2.0; any other is kept in `item` and counted in the outcome figures.
FEEDBACK_KEYS = frozenset({"card", "outcome", "acceptedSuggestions", "overrideReason", "outcomeTimestamp",
                           "extension"})


class FeedbackLog:
    """The feedback items in a database, each once."""

    def __init__(self, database: Database) -> None:
        self._engine, self._turn = database.engine, database.turn

    def add(self, service: str, item: dict[str, Any]) -> bool:
        """Store one feedback item as sent; False if the same item was stored before. ValueError if its
        outcomeTimestamp is not an instant with a time zone.

        Only an item with the same content is the same feedback: one sent with misspelt keys never absorbs the
        corrected resend, which arrives later and so is the card's latest outcome."""
        sent, instant = json.dumps(item, sort_keys=True, ensure_ascii=False), utc_instant(item["outcomeTimestamp"])
        # The same instant written with another offset is the same feedback: the digest reads it in UTC.
        content = json.dumps({**item, "outcomeTimestamp": instant}, sort_keys=True, ensure_ascii=False)
        row = {
            "service": service,
            "card": item["card"],
            "outcome": item["outcome"],
            "outcome_timestamp": instant,
            "accepted_suggestions": _json_or_none([s.get("id") for s in _objects(item.get("acceptedSuggestions"))]),
            "override_reason": _json_or_none(item.get("overrideReason")),
            "received_at": now(),
            "item": sent,
            "unknown_keys": _json_or_none(sorted(set(item) - FEEDBACK_KEYS)),
            "item_sha256": hashlib.sha256(content.encode()).hexdigest(),
        }
        try:
            with self._turn(), self._engine.begin() as connection:
                connection.execute(insert(feedback), row)
            return True
        except IntegrityError:
            return False

    def rows(self, service: str | None = None) -> list[dict[str, Any]]:
        query = select(feedback).order_by(feedback.c.id)
        if service:
            query = query.where(feedback.c.service == service)
        with self._engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(query)]


def _json_or_none(value: object) -> str | None:
    return json.dumps(value) if value else None


def _objects(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
