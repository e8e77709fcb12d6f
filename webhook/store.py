"""Feedback, the decision audit and seen JWT ids, in one SQL store (SQLAlchemy Core, schema by Alembic).

Any SQLAlchemy URL works; SQLite (default, embedded) and PostgreSQL (`postgresql+psycopg://...`, for several
instances) are tested. The schema is created and upgraded by `Store.migrate()` (Alembic, `migrations/`), run once in
the gunicorn master before the workers start and again, as a no-op, by each app.

Durability: every write is its own transaction, committed before the response is sent, so whatever was answered
with 200 is in the store even if the worker is killed the next instant. SQLite runs in WAL mode with
`synchronous=FULL`: each commit also reaches the disk (an fsync of the WAL), so it survives a power loss too, not
only a killed process (NORMAL would, and is cheaper, but an audit trail must not lose what it acknowledged; the
fsync cost about 0.3 ms per commit on our CI machine). PostgreSQL commits per request with its default
`synchronous_commit=on`.

Feedback is idempotent (a unique key over service, card, outcome and timestamp, the timestamp in UTC so that one
instant written with different offsets is one key); a `jti` is kept (as its sha256,
so that an id of any length fits) until its token expires, which makes the replay check hold across worker
processes and instances sharing the store.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    create_engine,
    delete,
    event,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 5000
_MIGRATING = threading.Lock()  # Alembic's `context` is process-global: one migration at a time per process

# The tables as the queries below see them. The schema itself is made by the migrations in migrations/versions/;
# tests/test_store.py checks that the two agree.
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
    Column("item", Text),  # the item's JSON as it was sent, whatever its keys
    Column("unknown_keys", Text),  # JSON list of the keys it sent that CDS Hooks does not define
    Column("item_sha256", String(64), nullable=False),  # so only the same content is the same feedback
    UniqueConstraint("service", "card", "outcome", "outcome_timestamp", "item_sha256", name="feedback_once"),
    Index("feedback_card", "card"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("decision_id", String(36), nullable=False, unique=True),
    Column("hook_instance", String(200), nullable=False),
    Column("service", String(200), nullable=False),
    Column("hook", String(50), nullable=False),  # as the request named it
    Column("evaluated_hook", String(50)),  # as the engine saw it (medication-prescribe -> order-select)
    Column("patient_id", String(200)),
    Column("evaluation_date", String(10)),  # YYYY-MM-DD
    Column("ruleset", String(200), nullable=False),
    Column("version", String(50), nullable=False),
    Column("manifest_sha256", String(64)),  # sha256 of the version file, as its release recorded it
    Column("facts", Text),  # JSON object; NULL when nothing was evaluated
    Column("missing", Text),  # JSON object: input fact -> why it was not used
    Column("fired_rules", Text, nullable=False),  # JSON list
    Column("decisions", Text, nullable=False),  # JSON list of engine.audit.decision_summary()
    Column("cards", Text, nullable=False),  # JSON list of {uuid, topic}
    Column("latency_ms", Float, nullable=False),
    Column("created_at", String(40), nullable=False, index=True),
)

# One row per card shown, so feedback (which names only the card) joins on the card uuid to topic and rule.
audit_card = Table(
    "audit_card",
    metadata,
    Column("card_uuid", String(200), primary_key=True),
    Column("decision_id", String(36), nullable=False, index=True),
    Column("service", String(200), nullable=False),
    Column("ruleset", String(200), nullable=False),
    Column("version", String(50), nullable=False),
    Column("topic", String(200), nullable=False),
    Column("rule_id", String(200)),
    Column("created_at", String(40), nullable=False, index=True),
)

seen_jti = Table(
    "jti",
    metadata,
    Column("issuer", String(500), nullable=False),
    Column("jti_sha256", String(64), nullable=False),  # the token's jti may be of any length; its digest is not
    Column("expires_at", BigInteger, nullable=False, index=True),  # 64 bits: tokens outlive 2038
    PrimaryKeyConstraint("issuer", "jti_sha256"),
)

_JSON_COLUMNS = ("facts", "missing", "fired_rules", "decisions", "cards")


@dataclass
class AuditRecord:
    """One evaluation as it is kept: enough to know what was decided, from what, by which exact rules."""

    decision_id: str
    hook_instance: str
    service: str
    hook: str
    patient_id: str | None
    ruleset: str
    version: str
    fired_rules: list[str]
    cards: list[dict]  # {uuid, topic, rule_id}: rule_id goes to audit_card only
    latency_ms: float
    evaluated_hook: str | None = None
    evaluation_date: str | None = None
    manifest_sha256: str | None = None
    facts: dict[str, Any] | None = None  # None: nothing was evaluated (no version in effect, not our drug)
    missing: dict[str, str] = field(default_factory=dict)
    decisions: list[dict] = field(default_factory=list)  # engine.audit.decision_summary() of each


_AUDIT_FIELDS = tuple(f.name for f in fields(AuditRecord))
_AUDIT_CARD_FIELDS = ("card_uuid", "decision_id", "service", "ruleset", "version", "topic", "rule_id", "created_at")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_explicit_transactions(engine: Engine) -> None:
    """Let SQLAlchemy, not the sqlite3 module, begin transactions, and take the write lock at BEGIN.

    Used for migrations: DDL then runs inside one transaction, and two processes migrating at once queue on the
    lock instead of both creating the same tables."""

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
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
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            return self._fd
        except OSError as error:
            if not self._warned:
                log.warning("SQLite writers cannot queue on %s (%s); SQLite's busy handler orders them instead",
                            self._path, error.strerror or error)
                self._warned = True
            return None


def _write_queue(url: str):
    """What a write waits for before it begins: its turn for a SQLite file; nothing for a server database, which
    queues its writers well itself."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return _SqliteWriteQueue(parsed.database).turn
    return contextlib.nullcontext


def alembic_config(url: str):
    """The Alembic configuration for a store URL, built in code (no alembic.ini needed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


class _DriverInsert:
    """An INSERT into `columns` of `table`, compiled once for a dialect and run as driver SQL.

    The audit write is on every call's path, and SQLAlchemy's per-call statement handling was a third of it (about
    50 us per insert). Driver SQL still goes through the connection, so errors arrive as SQLAlchemy's own."""

    def __init__(self, table: Table, columns: tuple[str, ...], dialect) -> None:
        compiled = insert(table).values({c: bindparam(c) for c in columns}).compile(dialect=dialect)
        self._sql, self._order = compiled.string, compiled.positiontup  # positiontup: None for named parameters

    def run(self, connection: Connection, rows: list[dict]) -> None:
        params = [tuple(row[c] for c in self._order) for row in rows] if self._order else rows
        connection.exec_driver_sql(self._sql, params[0] if len(params) == 1 else params)


class StoreError(RuntimeError):
    """The store cannot be used as it is (e.g. a database made before migrations existed)."""


class Store:
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self._turn = _write_queue(url)
        dialect = self.engine.dialect
        self._insert_audit = _DriverInsert(audit, (*_AUDIT_FIELDS, "created_at"), dialect)
        self._insert_audit_card = _DriverInsert(audit_card, _AUDIT_CARD_FIELDS, dialect)

    # --- schema -------------------------------------------------------------------------

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to the newest migration (or to `revision`); a no-op when it is there. Safe when several
        processes start at once (PostgreSQL: an advisory lock in migrations/env.py; SQLite: BEGIN IMMEDIATE)."""
        from alembic import command

        engine = make_engine(self.url, explicit_transactions=True)
        try:
            self._refuse_unversioned(engine)
            with _MIGRATING, engine.begin() as connection:
                config = alembic_config(self.url)
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
        finally:
            engine.dispose()

    def create_tables(self) -> None:
        """Kept for callers written before migrations: the same as `migrate()`."""
        self.migrate()

    def schema_revision(self) -> str | None:
        """The Alembic revision the store is at, or None before any migration."""
        with self.engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()

    @staticmethod
    def _refuse_unversioned(engine: Engine) -> None:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
        if "alembic_version" not in tables and tables & {"feedback", "audit", "jti"}:
            raise StoreError(f"the store {engine.url.render_as_string(hide_password=True)} was made before schema "
                             "migrations existed (tables without alembic_version): move it aside and start again")

    def ping(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    # --- feedback -----------------------------------------------------------------------

    def add_feedback(self, service: str, item: dict) -> bool:
        """Store one feedback item as sent; False if the same item was stored before. ValueError if its
        outcomeTimestamp is not an instant with a time zone.

        Only an item with the same content is the same feedback: one sent with misspelt keys never absorbs the
        corrected resend, which arrives later and so is the card's latest outcome."""
        sent, instant = json.dumps(item, sort_keys=True, ensure_ascii=False), utc_instant(item["outcomeTimestamp"])
        # The same instant written with another offset is the same feedback: the digest reads it in UTC.
        content = json.dumps({**item, "outcomeTimestamp": instant}, sort_keys=True, ensure_ascii=False)
        row = {
            "service": service,
            "card": item["card"],
            "outcome": item["outcome"],
            "outcome_timestamp": instant,
            "accepted_suggestions": _json_or_none([s.get("id") for s in _objects(item.get("acceptedSuggestions"))]),
            "override_reason": _json_or_none(item.get("overrideReason")),
            "received_at": _now(),
            "item": sent,
            "unknown_keys": _json_or_none(sorted(set(item) - FEEDBACK_KEYS)),
            "item_sha256": hashlib.sha256(content.encode()).hexdigest(),
        }
        try:
            with self._turn(), self.engine.begin() as connection:
                connection.execute(insert(feedback), row)
            return True
        except IntegrityError:
            return False

    def card_issuers(self, card_uuids: list[str]) -> dict[str, str]:
        """The service that issued each of these cards, for the cards the audit holds."""
        query = select(audit_card.c.card_uuid, audit_card.c.service).where(audit_card.c.card_uuid.in_(card_uuids))
        with self.engine.connect() as connection:
            return {card: service for card, service in connection.execute(query)}

    def feedback_rows(self, service: str | None = None) -> list[dict]:
        query = select(feedback).order_by(feedback.c.id)
        if service:
            query = query.where(feedback.c.service == service)
        with self.engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(query)]

    # --- audit --------------------------------------------------------------------------

    def add_audit(self, record: AuditRecord) -> bool:
        """Write the audit record of one hook call; False if it could not be (logged, never raised)."""
        created_at = _now()
        # Shallow: the JSON columns are serialised below anyway, so asdict's deep copy would be wasted work.
        row = {name: getattr(record, name) for name in _AUDIT_FIELDS}
        for name in _JSON_COLUMNS:
            row[name] = None if row[name] is None else _dumps(row[name])
        row["cards"] = _dumps([{"uuid": c["uuid"], "topic": c["topic"]} for c in record.cards])
        row["created_at"] = created_at
        cards = [{"card_uuid": c["uuid"], "decision_id": record.decision_id, "service": record.service,
                  "ruleset": record.ruleset, "version": record.version, "topic": c["topic"],
                  "rule_id": c.get("rule_id"), "created_at": created_at} for c in record.cards]
        try:
            with self._turn(), self.engine.begin() as connection:
                self._insert_audit.run(connection, [row])
                if cards:
                    self._insert_audit_card.run(connection, cards)
            return True
        except SQLAlchemyError as error:
            log.error("audit write failed for hookInstance %s (%s@%s): %s", record.hook_instance,
                      record.ruleset, record.version, type(error).__name__)
            return False

    def audit_rows(self) -> list[dict]:
        """Every audit row as stored (JSON columns as text), oldest first."""
        with self.engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(select(audit).order_by(audit.c.id))]

    def audit_records(self, since: str | dt.date | None = None) -> Iterator[dict]:
        """Audit records made on or after `since` (a date or ISO timestamp, UTC), oldest first, JSON decoded."""
        query = select(audit).order_by(audit.c.id)
        if since is not None:
            query = query.where(audit.c.created_at >= _iso(since))
        with self.engine.connect() as connection:
            for row in connection.execution_options(stream_results=True, yield_per=500).execute(query):
                yield _decoded(row._mapping)

    def audit_record(self, decision_id: str) -> dict | None:
        """One audit record by its decision id (or the uuid of one of its cards), JSON decoded; None if none."""
        shown = select(audit_card.c.decision_id).where(audit_card.c.card_uuid == decision_id).scalar_subquery()
        with self.engine.connect() as connection:
            row = connection.execute(select(audit).where(audit.c.decision_id == decision_id)).first() \
                or connection.execute(select(audit).where(audit.c.decision_id == shown)).first()
        return _decoded(row._mapping) if row else None

    def outcome_summary(self, since: str | dt.date | None = None, until: str | dt.date | None = None,
                        ruleset: str | None = None) -> dict:
        """Cards shown and what became of them, from the audit joined with feedback on the card uuid.

        A card's outcome is its latest feedback (by the instant of outcomeTimestamp, then by arrival): "accepted",
        "overridden", or "no feedback".
        `since`/`until` (dates or ISO timestamps, UTC, both included) bound when the card was shown. Returns:

            {"since": str | None, "until": str | None, "ruleset": str | None,
             "totals":   {"shown": n, "accepted": n, "accepted_suggestion_unknown": n, "overridden": n,
                          "no_feedback": n},
             "by_topic": [{"topic", "shown", "accepted", "overridden", "no_feedback"}, ...],  # most shown first
             "by_rule":  [{"rule_id", "topic", "shown", "accepted", "overridden", "no_feedback"}, ...],
             "by_day":   [{"day": "YYYY-MM-DD", "topic", "shown", "accepted", "overridden", "no_feedback"}, ...],
             "override_reasons": [{"topic", "rule_id", "code", "system", "display", "count"}, ...],  # most first
             "comments": [{"card_uuid", "topic", "rule_id", "day", "reason", "comment"}, ...],
             "unknown_keys": {key: n}}  # feedback items that sent keys CDS Hooks does not define, by key

        `accepted_suggestion_unknown` counts the accepted cards (within `accepted`) whose feedback did not say
        which suggestion was accepted.

        `rule_id` is the rule whose decision made the card (None for cards recorded without one); an override
        without a coded reason counts under code None.
        """
        query = (select(audit_card.c.card_uuid, audit_card.c.topic, audit_card.c.rule_id, audit_card.c.created_at,
                        feedback.c.outcome, feedback.c.outcome_timestamp, feedback.c.override_reason, feedback.c.id,
                        feedback.c.accepted_suggestions, feedback.c.unknown_keys)
                 .select_from(audit_card.outerjoin(feedback, feedback.c.card == audit_card.c.card_uuid))
                 .order_by(audit_card.c.created_at, audit_card.c.card_uuid, feedback.c.id))
        if since is not None:
            query = query.where(audit_card.c.created_at >= _iso(since))
        if until is not None:
            bound = _iso(until)
            if len(bound) == 10:  # a day: all of it
                query = query.where(audit_card.c.created_at < (dt.date.fromisoformat(bound)
                                                               + dt.timedelta(days=1)).isoformat())
            else:
                query = query.where(audit_card.c.created_at <= bound)
        if ruleset:
            query = query.where(audit_card.c.ruleset == ruleset)
        cards: dict[str, dict] = {}
        unknown_keys: dict[str, int] = {}
        with self.engine.connect() as connection:
            for row in connection.execute(query):
                card = cards.setdefault(row.card_uuid, {"topic": row.topic, "rule_id": row.rule_id,
                                                        "day": row.created_at[:10], "outcome": None,
                                                        "override": None, "latest": None, "suggestion": None})
                if row.outcome is None:
                    continue
                for key in _loads(row.unknown_keys) or []:
                    unknown_keys[key] = unknown_keys.get(key, 0) + 1
                latest = (_sortable_instant(row.outcome_timestamp), row.id)
                if card["latest"] is None or latest > card["latest"]:
                    card["outcome"], card["override"] = row.outcome, _loads(row.override_reason)
                    card["suggestion"], card["latest"] = _loads(row.accepted_suggestions), latest
        return {**_summarise(cards, since, until, ruleset), "unknown_keys": unknown_keys}

    # --- JWT ids ------------------------------------------------------------------------

    def remember_jti(self, issuer: str, jti: str, expires_at: int) -> bool:
        """Record a token id until it expires; False if it was seen before (a replay)."""
        try:
            with self._turn(), self.engine.begin() as connection:
                connection.execute(insert(seen_jti), {"issuer": issuer, "jti_sha256": _sha256(jti),
                                                      "expires_at": min(expires_at, _LATEST_EXPIRY)})
        except IntegrityError:
            return False
        self._forget_expired_jti()
        return True

    def _forget_expired_jti(self) -> None:
        """Housekeeping in its own transaction: two workers deleting the same rows must not fail a request."""
        try:
            with self._turn(), self.engine.begin() as connection:
                connection.execute(delete(seen_jti).where(seen_jti.c.expires_at < int(time.time())))
        except OperationalError as error:
            log.info("expired jti cleanup skipped: %s", type(error).__name__)


def utc_instant(value: str) -> str:
    """An instant with a time zone as UTC to the microsecond (`2026-06-02T10:00:00.000000Z`): one instant, however
    written, is one text, and such texts sort in time order. ValueError if `value` is no such instant."""
    try:
        moment = dt.datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone")
        return moment.astimezone(dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00, before the first UTC instant Python can hold
        raise ValueError(f"{value!r} is out of range") from None


def _sortable_instant(value: str) -> str:
    """For choosing the latest outcome by time; a timestamp stored before they were checked and that is not an
    instant counts as the oldest."""
    try:
        return utc_instant(value)
    except (TypeError, ValueError):
        return ""


_LATEST_EXPIRY = 2**63 - 1  # a token's exp may be any number; a BIGINT holds up to this


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()  # a JSON string may hold a lone surrogate


def _iso(value: str | dt.date) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def _loads(value: str | None) -> Any:
    try:
        return json.loads(value) if value else None
    except ValueError:
        return None


def _decoded(row: Any) -> dict:
    record = dict(row)
    record.pop("id", None)
    for name in _JSON_COLUMNS:
        record[name] = _loads(record.get(name))
    return record


def _json_or_none(value: object) -> str | None:
    return json.dumps(value) if value else None


def _objects(value: object) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


# The keys of a feedback item in CDS Hooks 2.0; any other is kept in `item` and counted in the outcome figures.
FEEDBACK_KEYS = frozenset({"card", "outcome", "acceptedSuggestions", "overrideReason", "outcomeTimestamp",
                           "extension"})


_OUTCOMES = {"accepted": "accepted", "overridden": "overridden", None: "no_feedback"}


def _counts() -> dict[str, int]:
    return {"shown": 0, "accepted": 0, "accepted_suggestion_unknown": 0, "overridden": 0, "no_feedback": 0}


def _summarise(cards: dict[str, dict], since, until, ruleset) -> dict:
    totals, by_topic, by_rule, by_day, reasons, comments = _counts(), {}, {}, {}, {}, []
    for uuid, card in cards.items():
        outcome = _OUTCOMES.get(card["outcome"], "no_feedback")
        topic, rule_id = card["topic"], card["rule_id"]
        for counts in (totals,
                       by_topic.setdefault(topic, {"topic": topic, **_counts()}),
                       by_rule.setdefault((rule_id, topic), {"rule_id": rule_id, "topic": topic, **_counts()}),
                       by_day.setdefault((card["day"], topic), {"day": card["day"], "topic": topic, **_counts()})):
            counts["shown"] += 1
            counts[outcome] += 1
            if outcome == "accepted" and not card["suggestion"]:
                counts["accepted_suggestion_unknown"] += 1  # accepted, but which suggestion was not said
        override = card["override"] if isinstance(card["override"], dict) else {}
        reason = override.get("reason") if isinstance(override.get("reason"), dict) else {}
        if outcome == "overridden":
            key = (topic, rule_id, reason.get("code"), reason.get("system"))
            entry = reasons.setdefault(key, {"topic": topic, "rule_id": rule_id, "code": reason.get("code"),
                                             "system": reason.get("system"), "display": reason.get("display"),
                                             "count": 0})
            entry["count"] += 1
        if override.get("userComment"):
            comments.append({"card_uuid": uuid, "topic": topic, "rule_id": rule_id, "day": card["day"],
                             "reason": reason.get("display") or reason.get("code"),
                             "comment": str(override["userComment"])})
    most_shown = lambda entry: (-entry["shown"], str(entry["topic"]), str(entry.get("rule_id")))  # noqa: E731
    return {
        "since": None if since is None else _iso(since),
        "until": None if until is None else _iso(until),
        "ruleset": ruleset,
        "totals": totals,
        "by_topic": sorted(by_topic.values(), key=most_shown),
        "by_rule": sorted(by_rule.values(), key=most_shown),
        "by_day": sorted(by_day.values(), key=lambda e: (e["day"], e["topic"])),
        "override_reasons": sorted(reasons.values(), key=lambda e: (-e["count"], e["topic"], str(e["code"]))),
        "comments": comments,
    }
