"""What became of the cards shown: the audit's cards joined with their feedback, counted by topic, rule and day."""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from store.tables import audit_card, feedback
from store.values import iso, loads, utc_instant

_OUTCOMES = {"accepted": "accepted", "overridden": "overridden", None: "no_feedback"}


def outcome_summary(engine: Engine, since: str | dt.date | None = None, until: str | dt.date | None = None,
                    ruleset: str | None = None) -> dict[str, Any]:
    """Cards shown and what became of them, from the audit joined with feedback on the card uuid.

    A card's outcome is its latest feedback (by the instant of outcomeTimestamp, then by arrival): "accepted",
    "overridden", or "no feedback".
    `since`/`until` (dates or ISO timestamps, UTC, both included) bound when the card was shown. Returns:

        {"since": str | None, "until": str | None, "ruleset": str | None,
         "totals":   {"shown": n, "accepted": n, "accepted_suggestion_unknown": n, "overridden": n,
                      "no_feedback": n},
         "by_topic": [{"topic", "shown", "accepted", "overridden", "no_feedback"}, ...],  # most shown first
         "by_rule":  [{"rule_id", "topic", "shown", "accepted", "overridden", "no_feedback"}, ...],
         "by_day":   [{"day": "YYYY-MM-DD", "topic", "shown", "accepted", "overridden", "no_feedback"}, ...],
         "override_reasons": [{"topic", "rule_id", "code", "system", "display", "count"}, ...],  # most first
         "comments": [{"card_uuid", "topic", "rule_id", "day", "reason", "comment"}, ...],
         "unknown_keys": {key: n}}  # feedback items that sent keys CDS Hooks does not define, by key

    `accepted_suggestion_unknown` counts the accepted cards (within `accepted`) whose feedback did not say
    which suggestion was accepted.

    `rule_id` is the rule whose decision made the card (None for cards recorded without one); an override
    without a coded reason counts under code None.
    """
    query = (select(audit_card.c.card_uuid, audit_card.c.topic, audit_card.c.rule_id, audit_card.c.created_at,
                    feedback.c.outcome, feedback.c.outcome_timestamp, feedback.c.override_reason, feedback.c.id,
                    feedback.c.accepted_suggestions, feedback.c.unknown_keys)
             .select_from(audit_card.outerjoin(feedback, feedback.c.card == audit_card.c.card_uuid))
             .order_by(audit_card.c.created_at, audit_card.c.card_uuid, feedback.c.id))
    if since is not None:
        query = query.where(audit_card.c.created_at >= iso(since))
    if until is not None:
        bound = iso(until)
        if len(bound) == 10:  # a day: all of it
            query = query.where(audit_card.c.created_at < (dt.date.fromisoformat(bound)
                                                           + dt.timedelta(days=1)).isoformat())
        else:
            query = query.where(audit_card.c.created_at <= bound)
    if ruleset:
        query = query.where(audit_card.c.ruleset == ruleset)
    cards: dict[str, dict[str, Any]] = {}
    unknown_keys: dict[str, int] = {}
    with engine.connect() as connection:
        for row in connection.execute(query):
            card = cards.setdefault(row.card_uuid, {"topic": row.topic, "rule_id": row.rule_id,
                                                    "day": row.created_at[:10], "outcome": None,
                                                    "override": None, "latest": None, "suggestion": None})
            if row.outcome is None:
                continue
            for key in loads(row.unknown_keys) or []:
                unknown_keys[key] = unknown_keys.get(key, 0) + 1
            latest = (_sortable_instant(row.outcome_timestamp), row.id)
            if card["latest"] is None or latest > card["latest"]:
                card["outcome"], card["override"] = row.outcome, loads(row.override_reason)
                card["suggestion"], card["latest"] = loads(row.accepted_suggestions), latest
    return {**_summarise(cards, since, until, ruleset), "unknown_keys": unknown_keys}


def _sortable_instant(value: str) -> str:
    """For choosing the latest outcome by time; a timestamp stored before they were checked and that is not an
    instant counts as the oldest."""
    try:
        return utc_instant(value)
    except (TypeError, ValueError):
        return ""


def _counts() -> dict[str, int]:
    return {"shown": 0, "accepted": 0, "accepted_suggestion_unknown": 0, "overridden": 0, "no_feedback": 0}


def _summarise(cards: dict[str, dict[str, Any]], since: str | dt.date | None, until: str | dt.date | None,
               ruleset: str | None) -> dict[str, Any]:
    totals: dict[str, int] = _counts()
    by_topic: dict[Any, dict[str, Any]] = {}
    by_rule: dict[Any, dict[str, Any]] = {}
    by_day: dict[Any, dict[str, Any]] = {}
    reasons: dict[Any, dict[str, Any]] = {}
    comments: list[dict[str, Any]] = []
    for uuid, card in cards.items():
        outcome = _OUTCOMES.get(card["outcome"], "no_feedback")
        topic, rule_id = card["topic"], card["rule_id"]
        for counts in (totals,
                       by_topic.setdefault(topic, {"topic": topic, **_counts()}),
                       by_rule.setdefault((rule_id, topic), {"rule_id": rule_id, "topic": topic, **_counts()}),
                       by_day.setdefault((card["day"], topic), {"day": card["day"], "topic": topic, **_counts()})):
            counts["shown"] += 1
            counts[outcome] += 1
            if outcome == "accepted" and not card["suggestion"]:
                counts["accepted_suggestion_unknown"] += 1  # accepted, but which suggestion was not said
        override = card["override"] if isinstance(card["override"], dict) else {}
        reason = override.get("reason") if isinstance(override.get("reason"), dict) else {}
        if outcome == "overridden":
            key = (topic, rule_id, reason.get("code"), reason.get("system"))
            entry = reasons.setdefault(key, {"topic": topic, "rule_id": rule_id, "code": reason.get("code"),
                                             "system": reason.get("system"), "display": reason.get("display"),
                                             "count": 0})
            entry["count"] += 1
        if override.get("userComment"):
            comments.append({"card_uuid": uuid, "topic": topic, "rule_id": rule_id, "day": card["day"],
                             "reason": reason.get("display") or reason.get("code"),
                             "comment": str(override["userComment"])})
    return {
        "since": None if since is None else iso(since),
        "until": None if until is None else iso(until),
        "ruleset": ruleset,
        "totals": totals,
        "by_topic": sorted(by_topic.values(), key=_most_shown),
        "by_rule": sorted(by_rule.values(), key=_most_shown),
        "by_day": sorted(by_day.values(), key=lambda e: (e["day"], e["topic"])),
        "override_reasons": sorted(reasons.values(), key=lambda e: (-e["count"], e["topic"], str(e["code"]))),
        "comments": comments,
    }


def _most_shown(entry: dict[str, Any]) -> tuple[int, str, str]:
    return -entry["shown"], str(entry["topic"]), str(entry.get("rule_id"))
