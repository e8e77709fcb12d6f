"""Ruleset drafts saved from the workbench, every revision kept.

A draft typed in the workbench lived only in the browser; saved in the store, every instance of a deployment sees
it, and each save is a new revision so an earlier text is never overwritten.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drafts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ruleset", sa.String(200), nullable=False),
        sa.Column("version", sa.String(50), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("text_sha256", sa.String(64), nullable=False),
        sa.Column("author", sa.String(200)),
        sa.Column("saved_at", sa.String(40), nullable=False),
        sa.UniqueConstraint("ruleset", "version", "revision", name="draft_revision_once"),
    )


def downgrade() -> None:
    op.drop_table("drafts")
