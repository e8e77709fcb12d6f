"""The store: feedback, the decision audit (with one row per card shown) and seen JWT ids.

Revision ID: 0001
Revises:
Create Date: 2026-06-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("service", sa.String(200), nullable=False),
        sa.Column("card", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("outcome_timestamp", sa.String(64), nullable=False),
        sa.Column("accepted_suggestions", sa.Text),
        sa.Column("override_reason", sa.Text),
        sa.Column("received_at", sa.String(40), nullable=False),
        sa.UniqueConstraint("service", "card", "outcome", "outcome_timestamp", name="feedback_once"),
    )
    op.create_index("feedback_card", "feedback", ["card"])

    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("decision_id", sa.String(36), nullable=False, unique=True),
        sa.Column("hook_instance", sa.String(200), nullable=False),
        sa.Column("service", sa.String(200), nullable=False),
        sa.Column("hook", sa.String(50), nullable=False),
        sa.Column("evaluated_hook", sa.String(50)),
        sa.Column("patient_id", sa.String(200)),
        sa.Column("evaluation_date", sa.String(10)),
        sa.Column("ruleset", sa.String(200), nullable=False),
        sa.Column("version", sa.String(50), nullable=False),
        sa.Column("manifest_sha256", sa.String(64)),
        sa.Column("facts", sa.Text),
        sa.Column("missing", sa.Text),
        sa.Column("fired_rules", sa.Text, nullable=False),
        sa.Column("decisions", sa.Text, nullable=False),
        sa.Column("cards", sa.Text, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
    )
    op.create_index("ix_audit_created_at", "audit", ["created_at"])

    op.create_table(
        "audit_card",
        sa.Column("card_uuid", sa.String(200), primary_key=True),
        sa.Column("decision_id", sa.String(36), nullable=False),
        sa.Column("service", sa.String(200), nullable=False),
        sa.Column("ruleset", sa.String(200), nullable=False),
        sa.Column("version", sa.String(50), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("rule_id", sa.String(200)),
        sa.Column("created_at", sa.String(40), nullable=False),
    )
    op.create_index("ix_audit_card_decision_id", "audit_card", ["decision_id"])
    op.create_index("ix_audit_card_created_at", "audit_card", ["created_at"])

    op.create_table(
        "jti",
        sa.Column("issuer", sa.String(500), nullable=False),
        sa.Column("jti", sa.String(500), nullable=False),
        sa.Column("expires_at", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("issuer", "jti"),
    )
    op.create_index("ix_jti_expires_at", "jti", ["expires_at"])


def downgrade() -> None:
    for table in ("jti", "audit_card", "audit", "feedback"):
        op.drop_table(table)
