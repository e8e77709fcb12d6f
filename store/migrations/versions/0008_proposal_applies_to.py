"""Whom a proposed release applies to (all, or new therapies only), so the release it leads to records what the
approvers approved.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Proposals made before this column applied to all: the only release the workbench could make then.
    with op.batch_alter_table("proposal") as batch:
        batch.add_column(sa.Column("applies_to", sa.String(20), nullable=False, server_default="all"))


def downgrade() -> None:
    with op.batch_alter_table("proposal") as batch:
        batch.drop_column("applies_to")
