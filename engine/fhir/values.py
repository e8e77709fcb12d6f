"""Small readers of FHIR values: dates as the record wrote them, codings, strings, ids, numbers and ages.

Malformed input (a list where a code belongs, an object where an array belongs) is read as absent, never raised on.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple, TypeGuard

_NO_TIME = datetime.min
# FHIR R4's id datatype. An id that breaks it is malformed data: it names no resource in card texts and is never
# the order a suggestion changes.
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


class When(NamedTuple):
    """A FHIR date or dateTime: an instant to sort by, and the calendar day as the source wrote it.

    A named tuple, not a frozen dataclass: one is built for every dated resource of every request, and a tuple is
    built in under half the time while comparing and sorting the same way (field by field)."""

    instant: datetime
    day: str  # YYYY-MM-DD; for a partial date, its first day
    last: str | None = None  # for a partial date ("2025", "2025-03"), its last day
    written: str = ""  # as the record wrote it


def _when(value: Any) -> When | None:
    """Full dates and dateTimes only: a partial date ("2026-01") cannot be placed on a day, so it is not used."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    instant = _utc_instant(value) if len(value) > 10 else None  # an unreadable time of day leaves a usable day
    if instant is not None and value[4] == value[7] == "-":
        # The common shape, YYYY-MM-DDThh:mm:ss...: a dateTime that parses was written on the day its first ten
        # characters give, so the day is not parsed and formatted again.
        return When(instant, value[:10])
    try:
        day = date.fromisoformat(value[:10])
    except ValueError:
        return None
    return When(instant if instant is not None else datetime(day.year, day.month, day.day), day.isoformat())


def _utc_instant(value: str) -> datetime | None:
    """A dateTime as a naive UTC datetime (local if it has no offset), or None if it cannot be read."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            return parsed
        utc = parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return datetime.combine(utc.date(), utc.time())  # several times faster than replace(tzinfo=None)


_PARTIAL_DATE = re.compile(r"^(\d{4})(?:-(\d{2}))?$")


def _when_or_partial(value: Any) -> When | None:
    """A full date or dateTime as `_when` reads it, or a year or year-month as the span of days it may be."""
    full = _when(value)
    if full is not None or not isinstance(value, str):
        return full
    match = _PARTIAL_DATE.match(value)
    if match is None:
        return None
    year, month = int(match.group(1)), match.group(2)
    try:
        first = date(year, int(month) if month else 1, 1)
    except ValueError:
        return None
    last = date(year, 12, 31) if month is None else (
        date(year + (first.month == 12), first.month % 12 + 1, 1) - timedelta(days=1))
    return When(datetime(first.year, first.month, first.day), first.isoformat(), last.isoformat(), value)


def _first_when(*values: Any) -> When | None:
    for value in values:
        found = _when(value)
        if found is not None:
            return found
    return None


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _objects(value: Any) -> list[dict[str, Any]]:
    """The objects of a FHIR array; a single object where an array belongs (seen in real clients) counts as one."""
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    return [value] if isinstance(value, dict) else []


def _codings(concept: Any) -> Iterator[dict[str, Any]]:
    for item in _objects(concept):
        yield from _objects(item.get("coding"))


def _status_codes(concept: Any) -> set[str]:
    """The codes of a status CodeableConcept (STU3 sent a bare code string, which is accepted too)."""
    if isinstance(concept, str):
        return {concept}
    return {c["code"] for c in _codings(concept) if isinstance(c.get("code"), str)}


def _text(value: Any) -> str | None:
    """The value if it is a string: malformed input (a list where a code belongs) must not break a lookup."""
    return value if isinstance(value, str) else None


def is_fhir_id(value: Any) -> bool:
    return isinstance(value, str) and _FHIR_ID.fullmatch(value) is not None


def _ref(resource: dict[str, Any]) -> str:
    ident = resource.get("id")
    shown = ident if is_fhir_id(ident) else "?" if ident is None else "(invalid id)"
    return f"{resource.get('resourceType', '?')}/{shown}"


def _is_number(value: Any) -> TypeGuard[float]:
    """A finite JSON number (Python's json accepts NaN and Infinity; a lab value cannot be either)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _completed(birth: date, on: date, unit: str) -> int:
    """Completed years, months, weeks or days: 17 the day before the 18th birthday, 18 on it."""
    if unit == "days":
        return (on - birth).days
    if unit == "weeks":
        return (on - birth).days // 7
    months = (on.year - birth.year) * 12 + on.month - birth.month - (on.day < birth.day)
    return months if unit == "months" else months // 12
