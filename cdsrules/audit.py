"""`cdsrules audit`: export the decision audit from the store, and replay a past decision (engine.audit.replay)."""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.audit import ReplayRefused, describe, replay

EXIT_IDENTICAL, EXIT_DIFFERENT, EXIT_REFUSED = 0, 1, 2
EXPORT_FIELDS = ["decision_id", "created_at", "hook_instance", "service", "hook", "evaluated_hook", "patient_id",
                 "evaluation_date", "ruleset", "version", "manifest_sha256", "fired_rules", "decisions", "cards",
                 "facts", "missing", "latency_ms", "version_choice"]


def open_store(url: str | None) -> Any:
    """The store at `url` (None: the service's default), for reading; refuses a SQLite file that does not exist
    instead of creating it. The store (and SQLAlchemy) load only when an audit command runs."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from store import DEFAULT_DB_URL, Store

    url = url or DEFAULT_DB_URL
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and not Path(parsed.database).is_file():
        raise OSError(f"no store at {parsed.database}")
    store = Store(url)
    try:
        revision = store.schema_revision()
    except SQLAlchemyError as error:
        raise OSError(f"cannot read the store {shown}: {type(error).__name__}: {error.orig or error}") from None
    if revision is None:
        raise OSError(f"{shown} holds no cdsrules store")
    return store


# --- commands ---------------------------------------------------------------------------------


def add_audit_command(subparsers: argparse._SubParsersAction) -> None:
    """Register `audit export` and `audit replay`; handlers are set as `command`, as cdsrules.cli dispatches."""
    audit = subparsers.add_parser("audit", help="export the decision audit; replay a past decision")
    actions = audit.add_subparsers(dest="audit_action", metavar="ACTION", required=True)

    p = actions.add_parser("export", help="every audit record (oldest first) as JSON lines or CSV")
    p.add_argument("--db", metavar="URL", help="the store (default: the one `cdsrules serve` uses by default)")
    p.add_argument("--since", type=dt.date.fromisoformat, metavar="YYYY-MM-DD",
                   help="only records made on or after this day (UTC)")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.set_defaults(command=cmd_audit_export)

    p = actions.add_parser("replay", help="evaluate a recorded decision again and compare (exit 0: identical, "
                                          "1: different, 2: refused)")
    p.add_argument("decision_id", metavar="DECISION_ID", help="the audit's decision id (or a card uuid)")
    p.add_argument("--db", metavar="URL", help="the store (default: the one `cdsrules serve` uses by default)")
    p.add_argument("--rules", default="rules", metavar="DIR")
    p.set_defaults(command=cmd_audit_replay)


def cmd_audit_export(args: argparse.Namespace) -> int:
    store = open_store(args.db)
    write_records(store.audit_records(args.since), args.format, sys.stdout)
    return EXIT_IDENTICAL


def write_records(records: Iterable[dict], form: str, out) -> int:
    """Write records as JSON lines or CSV (JSON-valued fields as JSON text); the number written."""
    count = 0
    if form == "csv":
        writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
    for record in records:
        if form == "csv":
            writer.writerow({k: _cell(record.get(k)) for k in EXPORT_FIELDS})
        else:
            out.write(json.dumps({k: record.get(k) for k in EXPORT_FIELDS}, ensure_ascii=False) + "\n")
        count += 1
    return count


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value


def cmd_audit_replay(args: argparse.Namespace) -> int:
    store = open_store(args.db)
    record = store.audit_record(args.decision_id)
    if record is None:
        print(f"error: no audit record with decision id (or card uuid) {args.decision_id}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        result = replay(record, args.rules)
    except ReplayRefused as refusal:
        print(f"refused: {refusal}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"decision {record['decision_id']}: {record['ruleset']}@{record['version']} "
          f"(sha256 {record['manifest_sha256']}) on {record['evaluation_date']}, hook "
          f"{record.get('evaluated_hook') or record['hook']}, patient {record['patient_id']}, "
          f"recorded {record['created_at']}")
    kept = record.get("version_choice")
    if kept and result.choice is not None:
        print(f"version chosen: {record['version']} ({kept['reason']})")
        print(f"chosen again: {result.choice.ruleset.version} ({result.choice.reason})")
    for title, decisions in (("recorded", record["decisions"]), ("replayed", result.decisions)):
        print(f"{title}:")
        for line in [describe(d, result.dose_unit) for d in decisions] or ["(no decision)"]:
            print(f"  {line}")
    if result.fired_rules != record["fired_rules"]:
        print(f"fired rules differ: recorded {', '.join(record['fired_rules']) or '-'}; "
              f"replayed {', '.join(result.fired_rules) or '-'}")
    if result.choice is not None and not result.same_choice:
        print(f"DIFFERENT: the released versions now choose {result.choice.ruleset.version}, not {record['version']}")
    if result.decisions != record["decisions"]:
        print("DIFFERENT: the decisions are not the ones recorded")
    elif result.identical:
        print("identical")
    return EXIT_IDENTICAL if result.identical else EXIT_DIFFERENT
