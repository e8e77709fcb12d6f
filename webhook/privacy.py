"""What application logs may show. Patient identifiers are pseudonyms: stable within a deployment, useless outside
it. And no value in a log line can break the line: control characters are written as escapes.

The key comes from CDSRULES_LOG_PSEUDONYM_KEY; without it, `cdsrules serve` draws one at start and hands it to its
workers, so one server's log lines about one patient match each other. The audit store keeps the real id.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import re
import secrets

KEY_VARIABLE = "CDSRULES_LOG_PSEUDONYM_KEY"


def ensure_key() -> None:
    """Called before workers start: they inherit the environment, and so one key."""
    if KEY_VARIABLE not in os.environ:  # not setdefault: it would draw a key on every call
        os.environ[KEY_VARIABLE] = secrets.token_hex(32)


def pseudonym(patient_id: str | None) -> str:
    if not patient_id:
        return "-"
    ensure_key()
    digest = _keyed(os.environ[KEY_VARIABLE]).copy()
    digest.update(patient_id.encode())
    return f"pt-{digest.hexdigest()[:16]}"


@functools.lru_cache(maxsize=4)
def _keyed(key: str) -> hmac.HMAC:
    """The HMAC with its key already hashed in, copied for each identifier (as hmac.new would build it anew)."""
    return hmac.new(key.encode(), digestmod=hashlib.sha256)


# C0 and C1 controls (newline, carriage return, escape ...) and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """`text` with each control character written as its escape: "a\\nb" for a newline, "\\x1b" for ESC."""
    return _CONTROL.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), text)


class EscapeControlCharacters(logging.Filter):
    """On a handler: every value put into a log record is made printable, so that a request value (a path, an id)
    cannot end the line and forge the next one. Numbers are left as they are, for %d and %.1f."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = printable(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_printable_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _printable_arg(v) for k, v in record.args.items()}
        return True


def _printable_arg(value: object) -> object:
    if value is None or isinstance(value, (int, float)):
        return value
    return printable(str(value))
