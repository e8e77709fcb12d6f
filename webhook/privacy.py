"""Patient identifiers in application logs are pseudonyms: stable within a deployment, useless outside it.

The key comes from CDSRULES_LOG_PSEUDONYM_KEY; without it, `cdsrules serve` draws one at start and hands it to its
workers, so one server's log lines about one patient match each other. The audit store keeps the real id.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets

KEY_VARIABLE = "CDSRULES_LOG_PSEUDONYM_KEY"


def ensure_key() -> None:
    """Called before workers start: they inherit the environment, and so one key."""
    os.environ.setdefault(KEY_VARIABLE, secrets.token_hex(32))


def pseudonym(patient_id: str | None) -> str:
    if not patient_id:
        return "-"
    ensure_key()
    digest = hmac.new(os.environ[KEY_VARIABLE].encode(), patient_id.encode(), hashlib.sha256).hexdigest()
    return f"pt-{digest[:16]}"
