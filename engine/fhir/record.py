"""The record as it stood on a date: a replay of a whole timeline sees only what was known that day."""
from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import date
from typing import Any


def resources_as_of(resources: Iterable[dict[str, Any]], on: date) -> list[dict[str, Any]]:
    """The record as it was known on `on`: nothing dated after it, orders that ended later shown active, and held
    orders restarted before it shown completed.

    A snapshot Bundle holds each order's final status: an order replaced on day +19 reads "completed" even when
    replaying day +18, when it was the active order. Its boundsPeriod.end (the last day taken) tells the two apart.
    Resources that need no change are returned as they are (not copied).
    """
    known = []
    for resource in resources:
        since = _known_since(resource)
        if since is not None and since > on:
            continue
        known.append(_status_on(resource, on))
    return known


def _known_since(resource: dict[str, Any]) -> date | None:
    """The day a resource came into the record; None when it carries no date (then it is always known)."""
    kind = resource.get("resourceType")
    if kind == "Observation":
        values = [resource.get("effectiveDateTime"), _dig(resource, "effectivePeriod", "start"),
                  resource.get("effectiveInstant"), resource.get("issued")]
    elif kind == "Procedure":
        values = [resource.get("performedDateTime"), _dig(resource, "performedPeriod", "start")]
    elif kind == "Condition":
        values = [resource.get("onsetDateTime"), _dig(resource, "onsetPeriod", "start"), resource.get("recordedDate")]
    elif kind == "MedicationRequest":  # written, and in effect: the later of authoredOn and the first start
        written = [_day(resource.get("authoredOn"))] + [_day(s) for s in _bounds(resource, "start")]
        days = [d for d in written if d is not None]
        return max(days) if days else None
    else:
        return None
    return next((d for d in map(_day, values) if d is not None), None)


def _status_on(resource: dict[str, Any], on: date) -> dict[str, Any]:
    """A completed or stopped order whose last day (boundsPeriod.end) is on or after `on` was active then; an
    on-hold order whose last day is before `on` had been replaced by then (a restart), so it reads completed."""
    status = resource.get("status")
    if resource.get("resourceType") != "MedicationRequest" or status not in ("completed", "stopped", "on-hold"):
        return resource
    ends = [d for d in map(_day, _bounds(resource, "end")) if d is not None]
    if not ends:
        return resource
    if status == "on-hold":
        return _with_status(resource, "completed") if max(ends) < on else resource
    return resource if max(ends) < on else _with_status(resource, "active")


def _with_status(resource: dict[str, Any], status: str) -> dict[str, Any]:
    changed = copy.deepcopy(resource)
    changed["status"] = status
    if status == "active":
        changed.pop("statusReason", None)
    return changed


def _bounds(request: dict[str, Any], key: str) -> list[Any]:
    return [_dig(d, "timing", "repeat", "boundsPeriod", key) for d in request.get("dosageInstruction", [])
            if isinstance(d, dict)]


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _day(value: Any) -> date | None:
    """The calendar day as written (as engine.fhir reads it), or None for a missing or partial date."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None
