"""Compare versions: the structural and behavioural diff (engine.diff) as a page, with changed tables drawn one
above the other, and the same diff as markdown for a review document."""
from __future__ import annotations

from flask import Response, render_template, request

from engine.diff import (
    Case,
    VersionDiff,
    behavioural_impact,
    record_cases,
    render_markdown,
    structural_changes,
    test_cases,
)
from webhook.workbench import svg
from webhook.workbench.context import VersionInfo
from webhook.workbench.views import sandbox, snapshot, workbench


def cohort_cases(ruleset_id: str) -> list[Case]:
    """The ruleset's cohort, each patient on each of its evaluation dates, as the diff's cases."""
    mapping = snapshot().mapping
    if mapping is None:
        return []
    return record_cases(mapping, [(f"{p.name} ({p.description})", p.resources, p.dates)
                                  for p in workbench().cohort(ruleset_id)])


def _pair() -> tuple[str, VersionInfo | None, VersionInfo | None, list[str]]:
    """The ruleset and the two versions asked for; by default the first ruleset with two loadable versions, and
    its last two."""
    shot = snapshot()
    comparable = [r for r, versions in shot.versions.items() if sum(1 for i in versions.values() if i.ruleset) > 1]
    ruleset_id = request.args.get("ruleset") or next(iter(comparable or shot.versions), "")
    loadable = [v for v, info in shot.versions.get(ruleset_id, {}).items() if info.ruleset]
    old = request.args.get("old") if request.args.get("old") in loadable else (
        loadable[-2] if len(loadable) > 1 else None)
    new = request.args.get("new") if request.args.get("new") in loadable else (loadable[-1] if loadable else None)
    return (ruleset_id, shot.find(ruleset_id, old or ""), shot.find(ruleset_id, new or ""), loadable)


def _diff(old: VersionInfo, new: VersionInfo, with_cohort: bool) -> VersionDiff:
    """engine.diff.diff_versions, run on the workbench's engine (which does not recompile per case)."""
    a, b = old.ruleset, new.ruleset
    cases = test_cases(a, b) + (cohort_cases(a.id) if with_cohort else [])
    return VersionDiff(a.id, a.version, b.version, structural_changes(a, b),
                       behavioural_impact(a, b, cases, sandbox()))


def compare() -> str:
    ruleset_id, old, new, loadable = _pair()
    with_cohort = request.args.get("cohort", "1") == "1"
    diff, tables = None, []
    if old and new and old.ruleset and new.ruleset:
        diff = _diff(old, new, with_cohort)
        for change in diff.changes:
            if change.kind == "table" and change.change == "changed":
                tables.append((change.name, svg.table_chart(old.ruleset.tables[change.name], old.ruleset),
                               svg.table_chart(new.ruleset.tables[change.name], new.ruleset)))
    return render_template("compare.html", ruleset_id=ruleset_id, rulesets=list(snapshot().versions),
                           versions=loadable, old=old, new=new, diff=diff, tables=tables, with_cohort=with_cohort)


def compare_markdown() -> Response:
    _, old, new, _ = _pair()
    if not (old and new and old.ruleset and new.ruleset):
        return Response("choose two versions that load\n", status=404, mimetype="text/plain")
    text = render_markdown(_diff(old, new, request.args.get("cohort", "1") == "1"))
    return Response(text, mimetype="text/markdown",
                    headers={"Content-Disposition": f'inline; filename="{old.ruleset_id}-{old.version}-to-'
                                                    f'{new.version}.md"'})
