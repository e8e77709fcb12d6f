"""Feedback timestamps in UTC: one instant, however it was written, is one key.

Feedback kept its outcomeTimestamp as sent, so the same instant written `Z` and `+00:00` was stored twice and the
latest outcome was chosen by text order across offsets. Each timestamp becomes UTC to the microsecond, as the
store now writes them; of rows that then say the same (service, card, outcome, instant), the first received is
kept. A timestamp that is not an instant with a time zone (accepted before they were checked) is left as it is.

Revision ID: 0003
Revises: 0002
Create Date: 2026-06-03
"""
from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import context, op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _utc(value: str) -> str | None:
    """As store.values.utc_instant at this revision; None where the value is no instant with a time zone."""
    try:
        moment = dt.datetime.fromisoformat(value)
        if moment.tzinfo is None:
            return None
        return moment.astimezone(dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    except (OverflowError, TypeError, ValueError):
        return None


def upgrade() -> None:
    if context.is_offline_mode():
        return  # rows only: nothing to emit as SQL
    connection = op.get_bind()
    rows = connection.execute(sa.text(
        "SELECT id, service, card, outcome, outcome_timestamp FROM feedback ORDER BY id")).all()
    kept, duplicates, changed = set(), [], []
    for row_id, service, card, outcome, timestamp in rows:
        utc = _utc(timestamp) or timestamp
        if (service, card, outcome, utc) in kept:
            duplicates.append({"id": row_id})
            continue
        kept.add((service, card, outcome, utc))
        if utc != timestamp:
            changed.append({"id": row_id, "utc": utc})
    # Duplicates go first: then no row still holds the text another is about to be given.
    if duplicates:
        connection.execute(sa.text("DELETE FROM feedback WHERE id = :id"), duplicates)
    if changed:
        connection.execute(sa.text("UPDATE feedback SET outcome_timestamp = :utc WHERE id = :id"), changed)


def downgrade() -> None:
    """Nothing to undo: UTC timestamps are timestamps the earlier code reads as well."""
