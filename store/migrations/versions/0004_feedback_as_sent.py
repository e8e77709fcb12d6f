"""Feedback kept as sent: the item's own JSON, the keys it sent that CDS Hooks does not define, and its digest.

Feedback was one row per (service, card, outcome, instant), so an item sent with misspelt keys
(`acceptedSuggestion`) was stored without its suggestion, and the correct resend of the same feedback was then
taken for a duplicate and dropped. Now an item is a duplicate only of an item with the same content: the digest of
its JSON joins the unique key. Rows stored before keep a digest of what was stored of them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""
from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa
from alembic import context, op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("feedback", recreate="auto") as batch:
        batch.add_column(sa.Column("item", sa.Text))
        batch.add_column(sa.Column("unknown_keys", sa.Text))
        batch.add_column(sa.Column("item_sha256", sa.String(64), nullable=False, server_default=""))
    if not context.is_offline_mode():
        connection = op.get_bind()
        rows = connection.execute(sa.text(
            "SELECT id, card, outcome, outcome_timestamp, accepted_suggestions, override_reason FROM feedback")).all()
        if rows:
            connection.execute(sa.text("UPDATE feedback SET item_sha256 = :digest WHERE id = :id"),
                               [{"id": row[0], "digest": _digest(*row[1:])} for row in rows])
    with op.batch_alter_table("feedback", recreate="always") as batch:
        batch.drop_constraint("feedback_once", type_="unique")
        batch.create_unique_constraint("feedback_once",
                                       ["service", "card", "outcome", "outcome_timestamp", "item_sha256"])


def downgrade() -> None:
    """Rows that differ only by content collapse to the first of them; the items as sent are dropped."""
    connection = op.get_bind()
    rows = connection.execute(sa.text(
        "SELECT id, service, card, outcome, outcome_timestamp FROM feedback ORDER BY id")).all()
    seen, extra = set(), []
    for row_id, *key in rows:
        if tuple(key) in seen:
            extra.append({"id": row_id})
        seen.add(tuple(key))
    if extra:
        connection.execute(sa.text("DELETE FROM feedback WHERE id = :id"), extra)
    with op.batch_alter_table("feedback", recreate="always") as batch:
        batch.drop_constraint("feedback_once", type_="unique")
        batch.create_unique_constraint("feedback_once", ["service", "card", "outcome", "outcome_timestamp"])
        batch.drop_column("item_sha256")
        batch.drop_column("unknown_keys")
        batch.drop_column("item")
