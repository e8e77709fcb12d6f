"""`cdsrules test --coverage`: what each version's tests exercise, against its ruleset's threshold (engine.coverage).

The threshold is the ruleset's own (`coverage:` in rules/<id>/releases.yaml, the default when absent); a
`--threshold-<kind>` option replaces one kind of it for this run. A version below its threshold fails the command,
as `cdsrules release` would refuse it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

from engine.coverage import Threshold, coverage_of, format_coverage, shortfalls
from engine.model import Ruleset
from engine.testing import CaseResult
from engine.versions import read_threshold

KINDS = ("rules", "table_rows", "conditions")


def add_coverage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coverage", action="store_true",
                        help="report what the tests cover; fail below the ruleset's threshold")
    parser.add_argument("--coverage-json", metavar="FILE", help="also write the coverage to FILE as JSON")
    for kind in KINDS:
        parser.add_argument(f"--threshold-{kind.replace('_', '-')}", type=_percent, metavar="PCT",
                            help=f"least percentage of {kind.replace('_', ' ')} covered (instead of the ruleset's)")


def wanted(args: argparse.Namespace) -> bool:
    return bool(args.coverage or args.coverage_json)


def report(tested: Iterable[tuple[Ruleset, list[CaseResult]]], args: argparse.Namespace) -> bool:
    """Print each version's coverage (and write the JSON if asked); True when every version meets its threshold."""
    found, met = [], True
    for ruleset, results in tested:
        coverage, threshold = coverage_of(ruleset, results), _threshold(ruleset, args)
        below = shortfalls(coverage, threshold)
        met = met and not below
        print(format_coverage(coverage, threshold))
        found.append({**coverage.as_dict(), "threshold": threshold.as_dict(), "meets_threshold": not below,
                      "below": below})
    if args.coverage_json:
        text = json.dumps({"versions": found, "meets_threshold": met}, indent=2, ensure_ascii=False)
        Path(args.coverage_json).write_text(text + "\n", encoding="utf-8")
    return met


def _threshold(ruleset: Ruleset, args: argparse.Namespace) -> Threshold:
    written = read_threshold(Path(ruleset.source_file).parent)
    given = {kind: value for kind in KINDS if (value := getattr(args, f"threshold_{kind}")) is not None}
    return dataclasses.replace(written, **given)


def _percent(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text} is not a percentage from 0 to 100")
    return value
