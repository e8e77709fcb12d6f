"""Seen JWT ids, for the replay check.

A `jti` is kept (as its sha256, so that an id of any length fits) until its token expires, which makes the replay
check hold across worker processes and instances sharing the store.
"""
from __future__ import annotations

import hashlib
import logging
import time

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError, OperationalError

from store.database import Database
from store.tables import seen_jti

log = logging.getLogger(__name__)

_LATEST_EXPIRY = 2**63 - 1  # a token's exp may be any number; a BIGINT holds up to this


class SeenTokens:
    """The token ids seen in a database, each kept until its token expires."""

    def __init__(self, database: Database) -> None:
        self._engine, self._turn = database.engine, database.turn

    def remember(self, issuer: str, jti: str, expires_at: int) -> bool:
        """Record a token id until it expires; False if it was seen before (a replay)."""
        try:
            with self._turn(), self._engine.begin() as connection:
                connection.execute(insert(seen_jti), {"issuer": issuer, "jti_sha256": _sha256(jti),
                                                      "expires_at": min(expires_at, _LATEST_EXPIRY)})
        except IntegrityError:
            return False
        self._forget_expired()
        return True

    def _forget_expired(self) -> None:
        """Housekeeping in its own transaction: two workers deleting the same rows must not fail a request."""
        try:
            with self._turn(), self._engine.begin() as connection:
                connection.execute(delete(seen_jti).where(seen_jti.c.expires_at < int(time.time())))
        except OperationalError as error:
            log.info("expired jti cleanup skipped: %s", type(error).__name__)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()  # a JSON string may hold a lone surrogate
