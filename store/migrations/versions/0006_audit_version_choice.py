"""The audit keeps why its version decided: the version in effect, the reason, and the therapy start dates read.

A release may apply to new therapies only; a patient already on therapy is then decided by the version in effect
when the therapy started (engine/choice.py). The version alone no longer says why it decided, and a replay must be
able to choose again from what was recorded. Records made before keep NULL: they were decided by the version in
effect on their date.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.add_column(sa.Column("version_choice", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("version_choice")
