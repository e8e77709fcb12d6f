"""`python -m bench.cards [DATE] [--out FILE]`: the cards the service answers for every cohort request, to compare
two versions of the code.

A change made for speed must not change a card. Every served ruleset's cohort (`bench.protocols`) is sent, for each
hook it serves, through the real app (SQLite store in a temporary folder) on one evaluation date (default today;
the cohort's records are moved to it). The answers, with the random card and suggestion uuids left out, are written
as canonical JSON to FILE (default bench/cards.json) and their sha256 printed: run it on both versions on the same
date and compare the digests (or the files, to see where they differ).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

from bench import protocols
from bench.common import ROOT, RULES, cohort_bodies
from tests.helpers import without_uuids

HOOKS = ("order-sign", "order-select", "patient-view")


def answers(today: dt.date) -> dict[str, list]:
    """(status, body without uuids) of each cohort request, by `<ruleset>/<hook>`."""
    from webhook import create_app

    folder = Path(tempfile.mkdtemp(prefix="cdsrules-cards-"))
    try:
        app = create_app({"RULES_DIR": str(RULES), "DB_URL": f"sqlite:///{folder / 'store.db'}"})
        app.extensions["cdsrules"].clock = lambda: today
        client = app.test_client()
        found: dict[str, list] = {}
        for ruleset_id in protocols.with_cohort():
            for hook in HOOKS:
                path = protocols.service_path(ruleset_id, hook)
                found[f"{ruleset_id}/{hook}"] = [
                    [response.status_code, without_uuids(response.get_json())]
                    for response in (client.post(path, json=body) for body in cohort_bodies(ruleset_id, hook, today))]
        return found
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cards", description=__doc__.splitlines()[0])
    parser.add_argument("date", nargs="?", type=dt.date.fromisoformat, default=dt.date.today())
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "cards.json")
    args = parser.parse_args(argv)
    found = answers(args.date)
    text = json.dumps(found, sort_keys=True, ensure_ascii=False)
    args.out.write_text(text, encoding="utf-8")
    for key, rows in found.items():
        print(f"{key}: {len(rows)} requests, {sum(len(body.get('cards', [])) for _, body in rows)} cards")
    print(f"sha256 {hashlib.sha256(text.encode()).hexdigest()} ({args.date}; written to {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
