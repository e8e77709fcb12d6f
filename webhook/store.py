"""Feedback, the per-call audit record and seen JWT ids, in one SQL store (SQLAlchemy Core).

SQLite by default, in WAL mode so that several gunicorn workers can write to the same file; any SQLAlchemy
URL works. Feedback is idempotent (a unique key over service, card, outcome and timestamp); a `jti` is kept until
its token expires, which makes the replay check hold across worker processes.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

log = logging.getLogger(__name__)

metadata = MetaData()

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("service", String(200), nullable=False),
    Column("card", String(200), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("outcome_timestamp", String(64), nullable=False),
    Column("accepted_suggestions", Text),  # JSON list of suggestion uuids
    Column("override_reason", Text),  # JSON: {reason: Coding, userComment}
    Column("received_at", String(40), nullable=False),
    UniqueConstraint("service", "card", "outcome", "outcome_timestamp", name="feedback_once"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("hook_instance", String(200), nullable=False),
    Column("service", String(200), nullable=False),
    Column("hook", String(50), nullable=False),
    Column("patient_id", String(200)),
    Column("ruleset", String(200), nullable=False),
    Column("version", String(50), nullable=False),
    Column("fired_rules", Text, nullable=False),  # JSON list
    Column("cards", Text, nullable=False),  # JSON list of {uuid, topic}
    Column("latency_ms", Float, nullable=False),
    Column("created_at", String(40), nullable=False, index=True),
)

seen_jti = Table(
    "jti",
    metadata,
    Column("issuer", String(500), nullable=False),
    Column("jti", String(500), nullable=False),
    Column("expires_at", Integer, nullable=False, index=True),
    PrimaryKeyConstraint("issuer", "jti"),
)


@dataclass
class AuditRecord:
    hook_instance: str
    service: str
    hook: str
    patient_id: str
    ruleset: str
    version: str
    fired_rules: list[str]
    cards: list[dict]  # {uuid, topic}
    latency_ms: float


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for `url`; for a SQLite file, its directory is created and WAL is switched on."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 5, "check_same_thread": False})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class Store:
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self.audit_failures = 0  # audit writes lost in this process; see /readyz
        self._lock = threading.Lock()

    def create_tables(self) -> None:
        """Create missing tables; safe when several workers start at once."""
        for attempt in range(3):
            try:
                metadata.create_all(self.engine)
                return
            except OperationalError:
                if attempt == 2:
                    raise
                time.sleep(0.2)

    def ping(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    # --- feedback -----------------------------------------------------------------------

    def add_feedback(self, service: str, item: dict) -> bool:
        """Store one feedback item; False if the same feedback was stored before."""
        row = {
            "service": service,
            "card": item["card"],
            "outcome": item["outcome"],
            "outcome_timestamp": item["outcomeTimestamp"],
            "accepted_suggestions": _json_or_none([s.get("id") for s in item.get("acceptedSuggestions") or []]),
            "override_reason": _json_or_none(item.get("overrideReason")),
            "received_at": _now(),
        }
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(feedback), row)
            return True
        except IntegrityError:
            return False

    def feedback_rows(self, service: str | None = None) -> list[dict]:
        query = select(feedback).order_by(feedback.c.id)
        if service:
            query = query.where(feedback.c.service == service)
        with self.engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(query)]

    # --- audit --------------------------------------------------------------------------

    def add_audit(self, record: AuditRecord) -> bool:
        """Write the audit record of one hook call; a failure is logged and counted, never raised."""
        row = {
            **record.__dict__,
            "fired_rules": json.dumps(record.fired_rules),
            "cards": json.dumps(record.cards),
            "created_at": _now(),
        }
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(audit), row)
            return True
        except SQLAlchemyError as error:
            with self._lock:
                self.audit_failures += 1
            log.error("audit write failed for hookInstance %s (%s@%s): %s", record.hook_instance,
                      record.ruleset, record.version, type(error).__name__)
            return False

    def audit_rows(self) -> list[dict]:
        with self.engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(select(audit).order_by(audit.c.id))]

    # --- JWT ids ------------------------------------------------------------------------

    def remember_jti(self, issuer: str, jti: str, expires_at: int) -> bool:
        """Record a token id until it expires; False if it was seen before (a replay)."""
        now = int(time.time())
        try:
            with self.engine.begin() as connection:
                connection.execute(delete(seen_jti).where(seen_jti.c.expires_at < now))
                connection.execute(insert(seen_jti), {"issuer": issuer, "jti": jti, "expires_at": expires_at})
            return True
        except IntegrityError:
            return False


def _json_or_none(value: object) -> str | None:
    return json.dumps(value) if value else None
