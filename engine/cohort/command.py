"""`cdsrules cohort generate`: the argparse part, registered by cdsrules.cli."""
from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

from ..loader import load_ruleset
from .files import write_cohort
from .generator import generate_cohort
from .model import DEFAULT_START
from .scenario import DEFAULT_RULES, load_scenarios, resolve


def add_cohort_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `cohort generate`; its handler is set as `command`, the way cdsrules.cli dispatches."""
    cohort = subparsers.add_parser("cohort", help="synthetic FHIR R4 cohorts for impact analysis and benchmarks")
    actions = cohort.add_subparsers(dest="cohort_action", metavar="ACTION", required=True)
    p = actions.add_parser("generate", help="write N synthetic patients (FHIR R4 Bundles) and an index")
    p.add_argument("--n", type=_positive_int, required=True, metavar="N", help="number of patients")
    p.add_argument("--seed", type=int, required=True, metavar="S", help="the same seed writes the same files")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--start", type=date.fromisoformat, default=DEFAULT_START, metavar="YYYY-MM-DD",
                   help=f"the earliest day 0 (index date) of a patient (default {DEFAULT_START})")
    p.add_argument("--ruleset", type=Path, metavar="FILE",
                   help="the ruleset version the clinician follows (default: the latest release beside the scenarios)")
    p.add_argument("--scenarios", type=Path, metavar="FILE",
                   help="the scenario file (default: the one beside the ruleset, else the one under --rules)")
    p.add_argument("--rules", type=Path, default=DEFAULT_RULES, metavar="DIR",
                   help=f"the rules folder whose ruleset has a scenario file (default {DEFAULT_RULES})")
    p.set_defaults(command=cmd_cohort_generate)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def cmd_cohort_generate(args: argparse.Namespace) -> int:
    """Write the cohort and say where; 0 on success (errors propagate to cli.main, which reports them)."""
    protocol = resolve(load_ruleset(args.ruleset) if args.ruleset else None,
                       load_scenarios(args.scenarios) if args.scenarios else None, rules_dir=args.rules)
    patients = generate_cohort(args.n, args.seed, args.start, protocol.ruleset, protocol.scenarios)
    index = write_cohort(patients, args.out, {"n": args.n, "seed": args.seed, "start": args.start.isoformat()})
    ineligible = sum(p.scenario in protocol.scenarios.ineligible for p in patients)
    print(f"wrote {len(patients)} patients ({ineligible} ineligible by design) to {args.out}; index {index}")
    return 0
