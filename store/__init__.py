"""Feedback, the decision audit and seen JWT ids, in one SQL store (SQLAlchemy Core, schema by Alembic).

`Store` is the one object the service holds: a database (store/database.py: engine, SQLite's tuning and write
queue, migrations) and the records kept in it: the audit (store/audit.py), feedback (store/feedback.py), seen token
ids (store/tokens.py), ruleset drafts saved from the workbench (store/drafts.py), proposed releases and their
reviews (store/proposals.py), and the outcome figures read from audit and feedback together (store/analytics.py).
The tables are in store/tables.py. Nothing here knows about
rules or HTTP: the store imports neither engine nor webhook.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from store.analytics import outcome_summary
from store.audit import AuditLog, AuditRecord
from store.database import DEFAULT_DB_URL, Database, StoreError, alembic_config, make_engine
from store.drafts import DraftLog, SavedDraft
from store.feedback import FEEDBACK_KEYS, FeedbackLog
from store.proposals import Proposals
from store.tokens import SeenTokens
from store.values import utc_instant

__all__ = ["DEFAULT_DB_URL", "FEEDBACK_KEYS", "AuditRecord", "SavedDraft", "Store", "StoreError", "alembic_config",
           "make_engine", "utc_instant"]


class Store:
    """The service's store at one URL: its schema, the audit, feedback and seen token ids."""

    def __init__(self, url: str) -> None:
        database = Database(url)
        self.url, self.engine, self._turn = url, database.engine, database.turn
        self._database = database
        self._audit, self._feedback, self._tokens = AuditLog(database), FeedbackLog(database), SeenTokens(database)
        self._drafts = DraftLog(database)
        self.proposals = Proposals(database)  # proposed releases and their reviews (store/proposals.py)

    # --- schema -------------------------------------------------------------------------

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to the newest migration (or to `revision`); a no-op when it is there."""
        self._database.migrate(revision)

    def create_tables(self) -> None:
        """Kept for callers written before migrations: the same as `migrate()`."""
        self.migrate()

    def schema_revision(self) -> str | None:
        """The Alembic revision the store is at, or None before any migration."""
        return self._database.schema_revision()

    def ping(self) -> bool:
        return self._database.ping()

    # --- feedback -----------------------------------------------------------------------

    def add_feedback(self, service: str, item: dict[str, Any]) -> bool:
        """Store one feedback item as sent; False if the same item was stored before (see FeedbackLog.add)."""
        return self._feedback.add(service, item)

    def feedback_rows(self, service: str | None = None) -> list[dict[str, Any]]:
        return self._feedback.rows(service)

    def card_issuers(self, card_uuids: list[str]) -> dict[str, str]:
        """The service that issued each of these cards, for the cards the audit holds."""
        return self._audit.card_issuers(card_uuids)

    # --- audit --------------------------------------------------------------------------

    def add_audit(self, record: AuditRecord) -> bool:
        """Write the audit record of one hook call; False if it could not be (logged, never raised)."""
        return self._audit.add(record)

    def audit_rows(self) -> list[dict[str, Any]]:
        """Every audit row as stored (JSON columns as text), oldest first."""
        return self._audit.rows()

    def audit_records(self, since: str | dt.date | None = None) -> Iterator[dict[str, Any]]:
        """Audit records made on or after `since` (a date or ISO timestamp, UTC), oldest first, JSON decoded."""
        return self._audit.records(since)

    def audit_record(self, decision_id: str) -> dict[str, Any] | None:
        """One audit record by its decision id (or the uuid of one of its cards), JSON decoded; None if none."""
        return self._audit.record(decision_id)

    def outcome_summary(self, since: str | dt.date | None = None, until: str | dt.date | None = None,
                        ruleset: str | None = None) -> dict[str, Any]:
        """Cards shown and what became of them (see store.analytics.outcome_summary)."""
        return outcome_summary(self.engine, since, until, ruleset)

    # --- JWT ids ------------------------------------------------------------------------

    def remember_jti(self, issuer: str, jti: str, expires_at: int) -> bool:
        """Record a token id until it expires; False if it was seen before (a replay)."""
        return self._tokens.remember(issuer, jti, expires_at)

    # --- ruleset drafts -----------------------------------------------------------------

    def save_draft(self, ruleset: str, version: str, text: str, author: str | None) -> SavedDraft:
        """Save a draft's text as the next revision of ruleset@version (earlier revisions are kept)."""
        return self._drafts.save(ruleset, version, text, author)

    def draft(self, ruleset: str, version: str) -> SavedDraft | None:
        """The latest saved text of ruleset@version, or None."""
        return self._drafts.latest(ruleset, version)

    def draft_history(self, ruleset: str, version: str) -> list[SavedDraft]:
        return self._drafts.history(ruleset, version)

    def drafts(self) -> list[SavedDraft]:
        """The latest revision of every saved draft, by ruleset and version."""
        return self._drafts.latest_of_each()
