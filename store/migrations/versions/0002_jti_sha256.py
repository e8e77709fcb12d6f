"""Seen JWT ids are kept as the sha256 of the jti, with a 64-bit expiry: any valid token fits the table.

A `jti` over 500 characters did not fit `jti.jti` on PostgreSQL, nor an expiry after 2038 its INTEGER, and the
token got 503 though nothing was wrong with it. The ids already seen are carried over as their digests, so a token
seen before the upgrade is still a replay after it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-06-03
"""
from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    seen = [] if context.is_offline_mode() else op.get_bind().execute(sa.text(
        "SELECT issuer, jti, expires_at FROM jti")).all()
    op.drop_table("jti")  # its index goes with it
    table = op.create_table(
        "jti",
        sa.Column("issuer", sa.String(500), nullable=False),
        sa.Column("jti_sha256", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("issuer", "jti_sha256"),
    )
    op.create_index("ix_jti_expires_at", "jti", ["expires_at"])
    if seen:
        op.bulk_insert(table, [{"issuer": issuer, "jti_sha256": hashlib.sha256(jti.encode()).hexdigest(),
                                "expires_at": expires_at} for issuer, jti, expires_at in seen])


def downgrade() -> None:
    """The ids cannot be recovered from their digests: the ids seen are forgotten, so a token seen before the
    downgrade and not yet expired (minutes, at most) would pass once more."""
    op.drop_table("jti")
    op.create_table(
        "jti",
        sa.Column("issuer", sa.String(500), nullable=False),
        sa.Column("jti", sa.String(500), nullable=False),
        sa.Column("expires_at", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("issuer", "jti"),
    )
    op.create_index("ix_jti_expires_at", "jti", ["expires_at"])
