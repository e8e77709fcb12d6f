"""Ruleset drafts saved from the workbench, keyed by ruleset id and version, every revision kept.

Saving a version again adds a revision: the draft of a version is its latest text, and the earlier ones stay as its
history. Two instances saving the same version at once cannot both take one revision number (a unique key); the
later one takes the next. Whether a version may be a draft at all (never a released one) is the caller's rule: the
store knows nothing of releases.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from store.database import Database
from store.tables import drafts
from store.values import now

_SAVE_ATTEMPTS = 5  # revision numbers taken meanwhile by another instance, one after another


@dataclass(frozen=True)
class SavedDraft:
    ruleset: str
    version: str
    revision: int
    text: str
    text_sha256: str
    author: str | None
    saved_at: str

    @property
    def ref(self) -> str:
        return f"{self.ruleset}@{self.version}"


class DraftLog:
    """The drafts in a database."""

    def __init__(self, database: Database) -> None:
        self._engine, self._turn = database.engine, database.turn

    def save(self, ruleset: str, version: str, text: str, author: str | None) -> SavedDraft:
        """Save the text as the next revision of ruleset@version."""
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        for _ in range(_SAVE_ATTEMPTS):
            try:
                with self._turn(), self._engine.begin() as connection:
                    latest = connection.execute(select(func.max(drafts.c.revision)).where(
                        drafts.c.ruleset == ruleset, drafts.c.version == version)).scalar()
                    row = {"ruleset": ruleset, "version": version, "revision": (latest or 0) + 1, "text": text,
                           "text_sha256": digest, "author": author, "saved_at": now()}
                    connection.execute(insert(drafts), row)
                return SavedDraft(**row)
            except IntegrityError:  # another instance saved this version meanwhile: take the next revision
                continue
        raise RuntimeError(f"could not save {ruleset}@{version}: {_SAVE_ATTEMPTS} revisions taken meanwhile")

    def latest(self, ruleset: str, version: str) -> SavedDraft | None:
        history = self.history(ruleset, version)
        return history[-1] if history else None

    def history(self, ruleset: str, version: str) -> list[SavedDraft]:
        """Every revision of ruleset@version, oldest first."""
        query = select(*_COLUMNS).where(drafts.c.ruleset == ruleset, drafts.c.version == version) \
            .order_by(drafts.c.revision)
        with self._engine.connect() as connection:
            return [SavedDraft(*row) for row in connection.execute(query)]

    def latest_of_each(self) -> list[SavedDraft]:
        """The latest revision of every saved version, by ruleset and version."""
        newest = select(drafts.c.ruleset, drafts.c.version, func.max(drafts.c.revision).label("revision")) \
            .group_by(drafts.c.ruleset, drafts.c.version).subquery()
        query = select(*_COLUMNS).join(newest, (drafts.c.ruleset == newest.c.ruleset) & (
            drafts.c.version == newest.c.version) & (drafts.c.revision == newest.c.revision)) \
            .order_by(drafts.c.ruleset, drafts.c.version)
        with self._engine.connect() as connection:
            return [SavedDraft(*row) for row in connection.execute(query)]


_COLUMNS = (drafts.c.ruleset, drafts.c.version, drafts.c.revision, drafts.c.text, drafts.c.text_sha256,
            drafts.c.author, drafts.c.saved_at)
