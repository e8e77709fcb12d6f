"""Proposed releases and their reviews: who proposed which bytes, who approved or rejected them, and when.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "proposal",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ruleset", sa.String(200), nullable=False),
        sa.Column("version", sa.String(50), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("proposed_by", sa.String(200), nullable=False),
        sa.Column("proposed_at", sa.String(40), nullable=False),
        sa.Column("effective_from", sa.String(10), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("superseded_by", sa.Integer),
    )
    op.create_index("ix_proposal_sha256", "proposal", ["sha256"])
    op.create_index("proposal_version", "proposal", ["ruleset", "version"])
    op.create_table(
        "proposal_review",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("proposal_id", sa.Integer, nullable=False),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("reviewed_at", sa.String(40), nullable=False),
        sa.Column("decision", sa.String(10), nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.UniqueConstraint("proposal_id", "reviewer", name="proposal_review_once"),
    )


def downgrade() -> None:
    op.drop_table("proposal_review")
    op.drop_index("proposal_version", table_name="proposal")
    op.drop_index("ix_proposal_sha256", table_name="proposal")
    op.drop_table("proposal")
