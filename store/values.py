"""How values go into the store's text columns and come back: JSON text, UTC instants, ISO dates."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def dumps(value: Any) -> str:
    return _ENCODER.encode(value)


# json.dumps with these options builds an encoder per call; the audit serialises six values a call with one.
_ENCODER = json.JSONEncoder(sort_keys=True, default=str, ensure_ascii=False)


def loads(value: str | None) -> Any:
    try:
        return json.loads(value) if value else None
    except ValueError:
        return None


def iso(value: str | dt.date) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def utc_instant(value: str) -> str:
    """An instant with a time zone as UTC to the microsecond (`2026-06-02T10:00:00.000000Z`): one instant, however
    written, is one text, and such texts sort in time order. ValueError if `value` is no such instant."""
    try:
        moment = dt.datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone")
        return moment.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00, before the first UTC instant Python can hold
        raise ValueError(f"{value!r} is out of range") from None
