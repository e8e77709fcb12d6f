"""The store backends every store test runs on: a SQLite file, and PostgreSQL when CDSRULES_TEST_PG_URL names one
(`.ci/postgres.sh` starts a throwaway cluster and prints it; .ci/run sets it, so CI runs both).

Each PostgreSQL test gets a schema of its own (`search_path` in the URL), dropped afterwards: tests do not see each
other's rows, and a server started on the URL uses the same schema."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PG_URL_VARIABLE = "CDSRULES_TEST_PG_URL"
BACKENDS = ["sqlite", "postgresql"]


def pg_schema_url(base: str, schema: str) -> str:
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@contextmanager
def empty_store(backend: str, directory: Path) -> Iterator[str]:
    """The URL of an empty store on `backend`, removed afterwards (PostgreSQL: a schema of its own)."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'store.db'}"
        return
    base = os.environ.get(PG_URL_VARIABLE)
    if not base:
        pytest.skip(f"PostgreSQL backend: {PG_URL_VARIABLE} is not set (run `eval \"$(bash .ci/postgres.sh)\"`)")
    with fresh_pg_schema(base, "t") as url:
        yield url


@contextmanager
def fresh_pg_schema(base: str, prefix: str) -> Iterator[str]:
    """A URL on a new schema of the PostgreSQL server `base` (named `<prefix>_<random>`), dropped afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base)
    try:
        with admin.begin() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema}"))
        yield pg_schema_url(base, schema)
    finally:
        with admin.begin() as connection:
            connection.execute(text("SET lock_timeout = '10s'"))
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path):
    """A URL of an empty store, on each backend in turn."""
    with empty_store(request.param, tmp_path) as url:
        yield url


@pytest.fixture(scope="module", params=BACKENDS)
def module_store_url(request, tmp_path_factory):
    """The same, shared by the tests of a module (they tell their records apart)."""
    with empty_store(request.param, tmp_path_factory.mktemp("store")) as url:
        yield url
