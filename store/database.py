"""The store's database: its engine, SQLite's tuning and write queue, and the schema by Alembic.

Any SQLAlchemy URL works; SQLite (default, embedded) and PostgreSQL (`postgresql+psycopg://...`, for several
instances) are tested. The schema is created and upgraded by `Database.migrate()` (Alembic, store/migrations/), run
once in the gunicorn master before the workers start and again, as a no-op, by each app.

Durability: every write is its own transaction, committed before the response is sent, so whatever was answered
with 200 is in the store even if the worker is killed the next instant. SQLite runs in WAL mode with
`synchronous=NORMAL`: a commit returns once its WAL frames are written into the kernel's page cache, and the WAL is
fsynced at each checkpoint, not at each commit. What each setting can lose (SQLite's documentation of PRAGMA
synchronous, and tests/test_store.py for the kills):

- a worker, or every process, killed with SIGKILL: nothing is lost with either setting. The commit's write() has
  put the frames in the kernel's page cache, which outlives the process, and the kernel writes them out.
- the kernel crashes or the machine loses power: with NORMAL, the commits since the last checkpoint may roll back
  (the database stays consistent: WAL frames are checksummed); with FULL, nothing, where the disk honours flushes.

The requirement is the first: an acknowledged call's record survives the death of the process that wrote
it. FULL buys the second with an fsync per commit, which serialised every worker's call behind the disk
(the commit was 20% of a worker's time under open-loop load, and most of the audit write). PostgreSQL commits per
request with its default `synchronous_commit=on`.
"""
from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

DEFAULT_DB_URL = "sqlite:///var/cdsrules.db"
SQLITE_BUSY_TIMEOUT_MS = 5000
_MIGRATING = threading.Lock()  # Alembic's `context` is process-global: one migration at a time per process
_EXTRACTED = contextlib.ExitStack()  # the migrations, where the package is read from an archive
atexit.register(_EXTRACTED.close)

WriteTurn = Callable[[], contextlib.AbstractContextManager[None]]


class StoreError(RuntimeError):
    """The store cannot be used as it is (e.g. a database made before migrations existed)."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_explicit_transactions(engine: Engine) -> None:
    """Let SQLAlchemy, not the sqlite3 module, begin transactions, and take the write lock at BEGIN.

    Used for migrations: DDL then runs inside one transaction, and two processes migrating at once queue on the
    lock instead of both creating the same tables."""

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, explicit_transactions: bool = False) -> Engine:
    """An engine for `url`; for a SQLite file, its directory is created and WAL is switched on."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})
    event.listen(engine, "connect", _sqlite_pragmas)
    if explicit_transactions:
        _sqlite_explicit_transactions(engine)
    return engine


class _SqliteWriteQueue:
    """One SQLite writer at a time, queued so that the next one starts the moment the last one commits.

    SQLite allows one writer; a writer that finds the lock taken sleeps in SQLite's busy handler for 1, 2, 5, 10 ...
    ms, and under load those sleeps were the whole tail (order-sign p99 over 200 ms, max over 1 s, at 10 clients).
    Here writers wait on a lock in their process and, across worker processes, on an flock of a file beside the
    database: the kernel wakes the next one at once. The file is opened per process, after the fork, since a lock
    on a descriptor shared with the master would exclude no one."""

    def __init__(self, database: str):
        self._path = f"{database}.write-lock"
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._pid: int | None = None
        self._warned = False

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        with self._threads:
            fd = self._locked()
            try:
                yield
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def _locked(self) -> int | None:
        """The lock file's descriptor, flocked; None where the file system cannot lock (some network ones): the
        write then goes ahead and SQLite's own lock, with its busy handler, keeps it correct, only slower."""
        try:
            if self._pid != os.getpid():
                self._fd, self._pid = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600), os.getpid()
                weakref.finalize(self, os.close, self._fd)  # a store that is let go does not keep its file open
            assert self._fd is not None
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            return self._fd
        except OSError as error:
            if not self._warned:
                log.warning("SQLite writers cannot queue on %s (%s); SQLite's busy handler orders them instead",
                            self._path, error.strerror or error)
                self._warned = True
            return None


def write_queue(url: str) -> WriteTurn:
    """What a write waits for before it begins: its turn for a SQLite file; nothing for a server database, which
    queues its writers well itself."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return _SqliteWriteQueue(parsed.database).turn
    return contextlib.nullcontext


@functools.cache
def migrations_dir() -> Path:
    """The Alembic scripts, shipped in the package: found where it is installed (a wheel too), or extracted for the
    life of the process where it is imported from an archive."""
    return _EXTRACTED.enter_context(resources.as_file(resources.files("store") / "migrations"))


def alembic_config(url: str) -> Config:
    """The Alembic configuration for a store URL, built in code (no alembic.ini needed)."""
    from alembic.config import Config  # Alembic loads only when the schema is looked at

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


class Database:
    """One SQL database: its engine, the queue its writers take turns in, and its schema."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.turn = write_queue(url)

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to the newest migration (or to `revision`); a no-op when it is there. Safe when several
        processes start at once (PostgreSQL: an advisory lock in store/migrations/env.py; SQLite: BEGIN
        IMMEDIATE)."""
        from alembic import command

        engine = make_engine(self.url, explicit_transactions=True)
        try:
            _refuse_unversioned(engine)
            with _MIGRATING, engine.begin() as connection:
                config = alembic_config(self.url)
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
        finally:
            engine.dispose()

    def schema_revision(self) -> str | None:
        """The Alembic revision the store is at, or None before any migration."""
        with self.engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            revision: str | None = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            return revision

    def ping(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False


def _refuse_unversioned(engine: Engine) -> None:
    with engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
    if "alembic_version" not in tables and tables & {"feedback", "audit", "jti"}:
        raise StoreError(f"the store {engine.url.render_as_string(hide_password=True)} was made before schema "
                         "migrations existed (tables without alembic_version): move it aside and start again")
