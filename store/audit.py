"""The decision audit: one record per hook call, and one row per card shown, by which feedback finds its decision."""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError

from store.database import Database
from store.tables import audit, audit_card
from store.values import dumps, iso, loads, now

log = logging.getLogger(__name__)

JSON_COLUMNS = ("facts", "missing", "fired_rules", "decisions", "cards", "version_choice")


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
    cards: list[dict[str, Any]]  # {uuid, topic, rule_id}: rule_id goes to audit_card only
    latency_ms: float
    evaluated_hook: str | None = None
    evaluation_date: str | None = None
    manifest_sha256: str | None = None
    facts: dict[str, Any] | None = None  # None: nothing was evaluated (no version in effect, not our drug)
    missing: dict[str, str] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)  # engine.audit.decision_summary() of each
    version_choice: dict[str, Any] | None = None  # engine.choice.VersionChoice.as_dict(): why `version` decided


_AUDIT_FIELDS = tuple(f.name for f in fields(AuditRecord))
_AUDIT_CARD_FIELDS = ("card_uuid", "decision_id", "service", "ruleset", "version", "topic", "rule_id", "created_at")


class _DriverInsert:
    """An INSERT into `columns` of `table`, compiled once for a dialect and run on a driver cursor.

    The audit write is on every call's path: SQLAlchemy's per-call statement handling was a third of it (about
    50 us per insert), and its Connection and transaction objects most of the rest beside the driver's own work."""

    def __init__(self, table: Table, columns: tuple[str, ...], dialect: Dialect) -> None:
        compiled = insert(table).values({c: bindparam(c) for c in columns}).compile(dialect=dialect)
        self._sql, self._order = compiled.string, compiled.positiontup  # positiontup: None for named parameters

    def run(self, cursor: Any, rows: list[dict[str, Any]]) -> None:
        params: list[Any] = [tuple(row[c] for c in self._order) for row in rows] if self._order else rows
        if len(params) == 1:
            cursor.execute(self._sql, params[0])
        else:
            cursor.executemany(self._sql, params)


class AuditLog:
    """The audit records in a database: written once per call, read for export, replay and the workbench."""

    def __init__(self, database: Database) -> None:
        self._engine, self._turn = database.engine, database.turn
        dialect = self._engine.dialect
        self._insert_audit = _DriverInsert(audit, (*_AUDIT_FIELDS, "created_at"), dialect)
        self._insert_audit_card = _DriverInsert(audit_card, _AUDIT_CARD_FIELDS, dialect)
        self._driver_error = dialect.loaded_dbapi.Error

    def add(self, record: AuditRecord) -> bool:
        """Write the audit record of one hook call; False if it could not be (logged, never raised)."""
        created_at = now()
        # Shallow: the JSON columns are serialised below anyway, so asdict's deep copy would be wasted work.
        row = {name: getattr(record, name) for name in _AUDIT_FIELDS}
        for name in JSON_COLUMNS:
            row[name] = None if row[name] is None else dumps(row[name])
        row["cards"] = dumps([{"uuid": c["uuid"], "topic": c["topic"]} for c in record.cards])
        row["created_at"] = created_at
        cards = [{"card_uuid": c["uuid"], "decision_id": record.decision_id, "service": record.service,
                  "ruleset": record.ruleset, "version": record.version, "topic": c["topic"],
                  "rule_id": c.get("rule_id"), "created_at": created_at} for c in record.cards]
        try:
            with self._turn():
                self._write(row, cards)
            return True
        except (SQLAlchemyError, self._driver_error) as error:
            log.error("audit write failed for hookInstance %s (%s@%s): %s", record.hook_instance,
                      record.ruleset, record.version, type(error).__name__)
            return False

    def _write(self, row: dict[str, Any], cards: list[dict[str, Any]]) -> None:
        """Both inserts in one transaction on a pooled driver connection, committed before this returns."""
        connection = self._engine.raw_connection()
        try:
            cursor = connection.cursor()
            self._insert_audit.run(cursor, [row])
            if cards:
                self._insert_audit_card.run(cursor, cards)
            connection.commit()
        finally:
            connection.close()  # back to the pool, which rolls back what was not committed

    def rows(self) -> list[dict[str, Any]]:
        """Every audit row as stored (JSON columns as text), oldest first."""
        with self._engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(select(audit).order_by(audit.c.id))]

    def records(self, since: str | dt.date | None = None) -> Iterator[dict[str, Any]]:
        """Audit records made on or after `since` (a date or ISO timestamp, UTC), oldest first, JSON decoded."""
        query = select(audit).order_by(audit.c.id)
        if since is not None:
            query = query.where(audit.c.created_at >= iso(since))
        with self._engine.connect() as connection:
            for row in connection.execution_options(stream_results=True, yield_per=500).execute(query):
                yield _decoded(row._mapping)

    def record(self, decision_id: str) -> dict[str, Any] | None:
        """One audit record by its decision id (or the uuid of one of its cards), JSON decoded; None if none."""
        shown = select(audit_card.c.decision_id).where(audit_card.c.card_uuid == decision_id).scalar_subquery()
        with self._engine.connect() as connection:
            row = connection.execute(select(audit).where(audit.c.decision_id == decision_id)).first() \
                or connection.execute(select(audit).where(audit.c.decision_id == shown)).first()
        return _decoded(row._mapping) if row else None

    def card_issuers(self, card_uuids: list[str]) -> dict[str, str]:
        """The service that issued each of these cards, for the cards the audit holds."""
        query = select(audit_card.c.card_uuid, audit_card.c.service).where(audit_card.c.card_uuid.in_(card_uuids))
        with self._engine.connect() as connection:
            return {card: service for card, service in connection.execute(query)}


def _decoded(row: Mapping[str, Any]) -> dict[str, Any]:
    record = dict(row)
    record.pop("id", None)
    for name in JSON_COLUMNS:
        record[name] = loads(record.get(name))
    return record
