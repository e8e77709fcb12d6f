"""`cdsrules examples`: the example CDS Hooks requests, written for a given day (today by default).

A template (`examples/templates/*.json`) holds a request and the day it was written as of (`anchor`). The request
written for day D has every FHIR date, dateTime and instant moved by D - anchor days: on D its results are as fresh,
its orders as old and its patient as old as they were on the anchor, so the protocol decides the same on any day.
"""
from __future__ import annotations

import argparse
import json
import re
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

DEFAULT_TEMPLATES = Path("examples") / "templates"
DEFAULT_OUT = Path("examples")

# A FHIR date (YYYY, YYYY-MM or YYYY-MM-DD), dateTime or instant; a time of day only follows a full date.
_FHIR_DATE = re.compile(r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
                        r"(?P<time>T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)?)?")
# Strings under these keys name or label things (ids, codes, versions, identifier values), even when one reads
# like a year: they are never moved.
_NAME_KEYS = frozenset({"id", "hookInstance", "code", "system", "version", "value", "reference", "display", "text"})


def shift_date(text: str, days: int) -> str:
    """`text` moved by `days` if it is a FHIR date or dateTime, at the precision it was written; else unchanged.

    The time of day and its offset are kept as written: the instant moves by exactly `days` x 24 hours. A partial
    date moves as its first day does (so "2026-01" by 40 days is "2026-02").
    """
    match = _FHIR_DATE.fullmatch(text)
    if match is None:
        return text
    year, month, day, time = match.group("year", "month", "day", "time")
    try:
        moved = date(int(year), int(month or 1), int(day or 1)) + timedelta(days=days)
    except (ValueError, OverflowError):
        return text  # not a calendar date (month 13, day 32), or out of range: not ours to change
    if day is not None:
        return moved.isoformat() + (time or "")
    return f"{moved.year:04d}-{moved.month:02d}" if month is not None else f"{moved.year:04d}"


def shift_dates(node: Any, days: int) -> Any:
    """A copy of a JSON document with every FHIR date and dateTime in it moved by `days`."""
    if isinstance(node, dict):
        return {key: value if key in _NAME_KEYS and isinstance(value, str) else shift_dates(value, days)
                for key, value in node.items()}
    if isinstance(node, list):
        return [shift_dates(item, days) for item in node]
    return shift_date(node, days) if isinstance(node, str) else node


def request_for(template: dict[str, Any], day: date) -> dict[str, Any]:
    """The template's request as of `day`, with a hookInstance of its own (each call is a new hook instance)."""
    anchor = date.fromisoformat(template["anchor"])
    request: dict[str, Any] = shift_dates(template["request"], (day - anchor).days)
    if "hookInstance" in request:
        request["hookInstance"] = str(uuid.uuid4())
    return request


def write_examples(templates: Path, out: Path, day: date) -> list[Path]:
    """Write each template in `templates` as a request for `day` under its own file name in `out`."""
    sources = sorted(templates.glob("*.json"))
    if not sources:
        raise OSError(f"no example templates (*.json) in {templates}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sources:
        request = request_for(json.loads(source.read_text(encoding="utf-8")), day)
        target = out / source.name
        target.write_text(json.dumps(request, indent=2) + "\n", encoding="utf-8")
        written.append(target)
    return written


def add_examples_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `examples`; its handler is set as `command`, the way cdsrules.cli dispatches."""
    p = subparsers.add_parser("examples", help="write the example CDS Hooks requests, dated for today (or --date)")
    p.add_argument("--date", type=date.fromisoformat, default=None, metavar="YYYY-MM-DD",
                   help="the day the requests are for (default: today)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                   help=f"where the requests are written (default {DEFAULT_OUT})")
    p.add_argument("--templates", type=Path, default=DEFAULT_TEMPLATES, metavar="DIR",
                   help=f"the dated templates (default {DEFAULT_TEMPLATES})")
    p.set_defaults(command=cmd_examples)


def cmd_examples(args: argparse.Namespace) -> int:
    day = args.date or date.today()
    for path in write_examples(args.templates, args.out, day):
        print(f"wrote {path} (dated for {day})")
    return 0
