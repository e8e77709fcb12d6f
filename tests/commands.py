"""`cdsrules` subcommands run in the test's own process, as cdsrules.cli dispatches them."""
from __future__ import annotations

import argparse

from cdsrules.audit import add_audit_command
from engine.cohort import add_cohort_command


def audit_cli(*argv: str) -> int:
    """`cdsrules audit ...` as cdsrules.cli dispatches it."""
    parser = argparse.ArgumentParser(prog="cdsrules")
    add_audit_command(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    return args.command(args)


def cohort_cli(*argv: str) -> int:
    """`cdsrules cohort ...` as cdsrules.cli dispatches it."""
    parser = argparse.ArgumentParser(prog="cdsrules")
    add_cohort_command(parser.add_subparsers(metavar="COMMAND"))
    args = parser.parse_args(argv)
    return args.command(args)
