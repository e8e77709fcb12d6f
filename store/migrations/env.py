"""Alembic environment for the cdsrules store.

`Store.migrate()` passes an open connection (in `config.attributes["connection"]`), already inside a transaction;
the `alembic` command line gets its URL from `-x db=URL`, the CDSRULES_DB_URL variable or `sqlalchemy.url`:

    alembic -c store/migrations/alembic.ini -x db=postgresql+psycopg://user:pw@host/db upgrade head
"""
from __future__ import annotations

import os

from alembic import context
from sqlalchemy import text

# Several workers or instances may start at once: on PostgreSQL the first takes this lock and migrates, the
# others wait for it and then find nothing to do. (On SQLite, Store.migrate() begins with BEGIN IMMEDIATE.)
MIGRATION_LOCK = 0x63647372  # "cdsr"

config = context.config


def run_migrations(connection) -> None:
    context.configure(connection=connection, target_metadata=None, compare_type=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


def url() -> str:
    return context.get_x_argument(as_dictionary=True).get("db") or os.environ.get("CDSRULES_DB_URL") \
        or config.get_main_option("sqlalchemy.url")


if context.is_offline_mode():
    context.configure(url=url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    run_migrations(config.attributes["connection"])
else:
    from store.database import make_engine

    engine = make_engine(url(), explicit_transactions=True)
    try:
        with engine.begin() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()
