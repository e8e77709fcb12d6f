"""`cdsrules`: validate, test, evaluate and explain rulesets, and serve them over CDS Hooks.

Thin by design: each command calls the engine (or the store, or the webhook) and prints. This package sits above
all three and nothing imports it; `serve` hands its options to webhook.server, imported only when serving.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import asdict
from pathlib import Path

import yaml

from cdsrules import coverage
from cdsrules.audit import add_audit_command
from cdsrules.four_eyes import describe, release_file
from engine import diff, versions
from engine.cohort import add_cohort_command
from engine.decide import decide, facts_from_record, given_facts
from engine.dossier import dossier_from_files
from engine.errors import EvaluationError, RulesetErrors
from engine.examples import add_examples_command
from engine.explain import explain_ruleset, format_evaluation
from engine.loader import SITE_MAPPING, find_site_mapping, load_ruleset, ruleset_files, site_for
from engine.review import review_warnings
from engine.runtime import Engine
from engine.testing import run_tests

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, serve_options = parser.parse_known_args(argv)
    if getattr(args, "command", None) is cmd_serve:
        return cmd_serve(serve_options)
    if serve_options:
        parser.error(f"unrecognized arguments: {' '.join(serve_options)}")
    if not hasattr(args, "command"):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.command(args)
    except RulesetErrors as exc:
        _print_errors(exc)
        return EXIT_FAILED
    except (EvaluationError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdsrules", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(metavar="COMMAND")

    p = sub.add_parser("validate", help="check ruleset files or directories")
    p.add_argument("paths", nargs="*", default=["rules"], metavar="PATH")
    p.set_defaults(command=cmd_validate)

    p = sub.add_parser("test", help="run the tests written in the rulesets")
    p.add_argument("paths", nargs="*", default=["rules"], metavar="PATH")
    p.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    coverage.add_coverage_options(p)
    p.set_defaults(command=cmd_test)

    p = sub.add_parser("evaluate", help="evaluate one ruleset on facts or a FHIR bundle")
    p.add_argument("ruleset", metavar="RULESET_FILE")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--facts", metavar="FILE", help="facts as JSON or YAML")
    source.add_argument("--fhir", metavar="BUNDLE", help="a FHIR R4 Bundle (JSON), read through the site mapping")
    p.add_argument("--draft-orders", metavar="BUNDLE", help="draft orders (FHIR R4 Bundle) for order hooks")
    p.add_argument("--hook", help="the CDS hook to evaluate for (e.g. order-sign)")
    p.add_argument("--date", help="evaluation date YYYY-MM-DD (default: today)")
    p.add_argument("--json", action="store_true", help="print the evaluation as JSON")
    p.set_defaults(command=cmd_evaluate)

    p = sub.add_parser("explain", help="print a ruleset in plain language")
    p.add_argument("ruleset", metavar="RULESET_FILE")
    p.set_defaults(command=cmd_explain)

    p = sub.add_parser("release", help="release a draft version (records it in the manifest)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--effective-from", type=dt.date.fromisoformat, metavar="YYYY-MM-DD",
                   help="needed, unless an approved proposal gives it")
    p.add_argument("--approved-by", default="", metavar="TEXT", help="needed, unless an approved proposal names them")
    p.add_argument("--note", default="", metavar="TEXT")
    p.add_argument("--applies-to", choices=[versions.APPLIES_TO_ALL, versions.APPLIES_TO_NEW_THERAPIES],
                   default=versions.APPLIES_TO_ALL,
                   help="all patients (default), or only therapies started on or after the effective date")
    p.add_argument("--db", metavar="URL", help="the workbench's store, with the approved proposal (governed rulesets)")
    p.add_argument("--emergency-reason", default="", metavar="TEXT",
                   help="release a governed ruleset without its approvals; the reason is recorded")
    p.set_defaults(command=cmd_release)

    p = sub.add_parser("retire", help="end a released version's effect")
    p.add_argument("ruleset_id", metavar="ID")
    p.add_argument("version", metavar="VERSION")
    p.add_argument("--effective-to", required=True, type=dt.date.fromisoformat, metavar="YYYY-MM-DD")
    p.add_argument("--rules", default="rules", metavar="DIR")
    p.set_defaults(command=cmd_retire)

    p = sub.add_parser("diff", help="what an amendment changes: structure and decisions")
    p.add_argument("ruleset_id", metavar="ID")
    p.add_argument("old", metavar="V1")
    p.add_argument("new", metavar="V2")
    p.add_argument("--rules", default="rules", metavar="DIR")
    p.add_argument("--cohort", metavar="DIR", help="also compare on a generated cohort (cdsrules cohort generate)")
    p.add_argument("--effective-from", type=dt.date.fromisoformat, metavar="YYYY-MM-DD",
                   help="V2's effective date, for a draft (a released V2 has its own): with --cohort, which patients "
                        "it changes as new therapies only")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true")
    form.add_argument("--markdown", action="store_true")
    p.set_defaults(command=cmd_diff)

    p = sub.add_parser("dossier", help="the release dossier of a version, as PDF or HTML")
    p.add_argument("ruleset_id", metavar="ID")
    p.add_argument("version", metavar="VERSION")
    p.add_argument("--out", required=True, type=Path, metavar="FILE.pdf|FILE.html")
    p.add_argument("--rules", default="rules", metavar="DIR")
    cohort = p.add_mutually_exclusive_group()
    cohort.add_argument("--cohort", type=Path, metavar="DIR",
                        help="measure the impact on this cohort (default: one generated from the scenario file)")
    cohort.add_argument("--tests-only", action="store_true", help="measure the impact on the tests alone")
    p.set_defaults(command=cmd_dossier)

    p = sub.add_parser("reload", help="make running servers load the rules anew (after a release)")
    p.add_argument("--rules", default="rules", metavar="DIR")
    p.set_defaults(command=cmd_reload)

    # Its options are webhook.server's own (`cdsrules serve --help` lists them), parsed there.
    p = sub.add_parser("serve", help="serve the rules as CDS Hooks services (gunicorn)", add_help=False)
    p.set_defaults(command=cmd_serve)

    add_cohort_command(sub)
    add_audit_command(sub)
    add_examples_command(sub)
    return parser


def _print_errors(exc: RulesetErrors) -> None:
    for error in exc.errors:
        print(f"{error.file}:{error.line}:{error.column}: error: {error.message}", file=sys.stderr)
        print(f"    at {error.path_text}", file=sys.stderr)
    count = len(exc.errors)
    print(f"{count} error{'s' if count != 1 else ''}", file=sys.stderr)


def _load_all(paths) -> tuple[list, list]:
    loaded, errors, sites = [], [], {}
    files = ruleset_files(paths)
    for file in files:
        try:
            folder = file.resolve().parent
            if folder not in sites:
                sites[folder] = site_for(folder)  # input facts are checked against the site mapping
            loaded.append(load_ruleset(file, site=sites[folder]))
        except RulesetErrors as exc:
            errors.extend(exc.errors)
    if not files:
        raise OSError(f"no ruleset files found in {' '.join(map(str, paths))}")
    return loaded, errors


def cmd_validate(args) -> int:
    loaded, errors = _load_all(args.paths)
    for folder in sorted({Path(r.source_file).parent for r in loaded}):
        errors.extend(versions.verify_folder(folder))  # released files must be unchanged
    bad_files = {e.file for e in errors}
    for ruleset in loaded:
        if ruleset.source_file not in bad_files:
            print(f"ok    {ruleset.source_file}  ({ruleset.ref}, {len(ruleset.rules)} rules)")
    for warning in review_warnings(loaded, dt.date.today()):  # governance's to act on; the files are valid
        print(f"{warning.file}: warning: {warning.message}", file=sys.stderr)
    if errors:
        _print_errors(RulesetErrors(errors))
        return EXIT_FAILED
    return EXIT_OK


def cmd_test(args) -> int:
    loaded, errors = _load_all(args.paths)
    engine, failed, total, tested = Engine(), 0, 0, []
    for ruleset in loaded:
        results = run_tests(ruleset, engine)
        tested.append((ruleset, results))
        bad = [r for r in results if not r.passed]
        total, failed = total + len(results), failed + len(bad)
        print(f"{ruleset.ref}: {len(results) - len(bad)} passed, {len(bad)} failed")
        for result in results:
            if not result.passed or args.verbose:
                print(f"  {'PASS' if result.passed else 'FAIL'}  {result.name}")
            for difference in result.differences:
                print(f"        {difference}")
    if errors:
        _print_errors(RulesetErrors(errors))
    print(f"{total - failed} passed, {failed} failed")
    covered = coverage.report(tested, args) if coverage.wanted(args) else True
    return EXIT_FAILED if failed or errors or not covered else EXIT_OK


def cmd_evaluate(args) -> int:
    ruleset = load_ruleset(args.ruleset)
    date = dt.date.fromisoformat(args.date) if args.date else dt.date.today()
    if args.facts:
        written = yaml.safe_load(Path(args.facts).read_text(encoding="utf-8")) or {}
        if not isinstance(written, dict):
            raise ValueError(f"{args.facts}: facts must be a mapping of fact name to value")
        facts = given_facts(written)
    else:
        facts = _facts_from_fhir(args, date)
    evaluation = decide(Engine(), ruleset, facts, date, args.hook)
    if args.json:
        print(json.dumps(asdict(evaluation), indent=2, default=str))
    else:
        print(format_evaluation(ruleset, evaluation))
    return EXIT_OK


def _facts_from_fhir(args, date):
    from engine import fhir

    mapping = fhir.load_site_mapping(find_site_mapping(Path(args.ruleset).resolve().parent))
    resources = fhir.resources_from(json.loads(Path(args.fhir).read_text(encoding="utf-8")))
    drafts = None
    if args.draft_orders:
        drafts = fhir.resources_from(json.loads(Path(args.draft_orders).read_text(encoding="utf-8")))
    return facts_from_record(mapping, resources, date, drafts)


def cmd_explain(args) -> int:
    print(explain_ruleset(load_ruleset(args.ruleset)))
    return EXIT_OK


def cmd_release(args) -> int:
    try:
        entry = release_file(args.file, args.effective_from, args.approved_by, args.note, args.db,
                             args.emergency_reason, applies_to=args.applies_to)
    except versions.ReleaseRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"released {Path(args.file).parent.name}@{entry.version} effective from {entry.effective_from} "
          f"(sha256 {entry.sha256[:12]}..., approved by {entry.approved_by})"
          + (" for therapies started from then on" if entry.applies_to == versions.APPLIES_TO_NEW_THERAPIES else ""))
    for line in describe(entry):
        print(line)
    folder = Path(args.file).parent
    for later in versions.taking_effect_after(versions.read_manifest(folder), entry.effective_from):
        print(f"warning: {folder.name}@{later.version} takes effect on {later.effective_from}, after this version, "
              f"and decides from then on instead of {entry.version} (the latest effective date is chosen, whatever "
              "the number): release a successor effective from then that keeps this change", file=sys.stderr)
    return EXIT_OK


def cmd_retire(args) -> int:
    try:
        entry = versions.retire(Path(args.rules) / args.ruleset_id, args.version, args.effective_to)
    except versions.ReleaseRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"retired {args.ruleset_id}@{entry.version}: in effect through {entry.effective_to}")
    return EXIT_OK


def cmd_diff(args) -> int:
    folder = Path(args.rules) / args.ruleset_id
    old, new = (load_ruleset(folder / f"{v}.yaml") for v in (args.old, args.new))
    extra = diff.cohort_cases(args.cohort, Path(args.rules) / SITE_MAPPING) if args.cohort else []
    released = versions.read_manifest(folder).get(args.new)
    result = diff.diff_versions(old, new, extra, args.effective_from or (released and released.effective_from))
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    elif args.markdown:
        print(diff.render_markdown(result))
    else:
        print(diff.render_text(result))
    return EXIT_OK


def cmd_dossier(args) -> int:
    from webhook.workbench.dossier_render import dossier_html, dossier_pdf  # the renderer the workbench uses

    if args.out.suffix not in (".pdf", ".html"):
        raise ValueError(f"{args.out}: the dossier is written as .pdf or .html")
    found = dossier_from_files(Path(args.rules), args.ruleset_id, args.version, dt.date.today(),
                               with_cohort=not args.tests_only, cohort_dir=args.cohort)
    html = dossier_html(found)
    if args.out.suffix == ".pdf":
        args.out.write_bytes(dossier_pdf(html))
    else:
        args.out.write_text(html, encoding="utf-8")
    impact = found.impact.measured_on if found.impact else "no previous version"
    print(f"wrote {args.out}: {found.ruleset.ref}, {len(found.rules)} rules ({len(found.uncited)} citing no clause), "
          f"{found.tests_passed}/{len(found.tests)} tests passed; impact measured on {impact}")
    return EXIT_OK


def cmd_reload(args) -> int:
    """Check the set first and say what the servers will do, then ask them to reload."""
    rules = Path(args.rules)
    try:
        catalog = versions.load_catalog(rules)
        verdict = EXIT_OK
    except RulesetErrors as exc:
        _print_errors(exc)
        print("the rules are invalid: running servers will refuse them and keep the last good set", file=sys.stderr)
        catalog, verdict = None, EXIT_FAILED
    (rules / versions.RELOAD_MARKER).write_text(dt.datetime.now(dt.UTC).isoformat() + "\n", encoding="utf-8")
    if catalog is not None:
        today = dt.date.today()
        in_effect = [f"{i}@{catalog.select(i, today).version}" for i in catalog.served_ids()
                     if catalog.select(i, today)]
        print(f"reload requested; in effect today: {', '.join(in_effect) or 'none'}")
    return verdict


def cmd_serve(options: list[str]) -> int:
    from webhook.server import main as serve  # the HTTP stack loads only when serving

    return serve(options)


if __name__ == "__main__":
    sys.exit(main())
