"""The audit's card rows lose their index on decision_id, which no query reads.

Cards are found by their own uuid (the primary key: feedback, card issuers, a decision by one of its cards) and
reported by date (`ix_audit_card_created_at`); a decision's cards are in its audit row. The index cost every call a
page write: its keys are random uuids, so each insert lands on a page of its own.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""
from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_audit_card_decision_id", table_name="audit_card")


def downgrade() -> None:
    op.create_index("ix_audit_card_decision_id", "audit_card", ["decision_id"])
