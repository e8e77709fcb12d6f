"""What an amendment changes: the structural diff of two versions and its behavioural impact.

Structure: parameters, table rows, facts and rules added, removed or changed, in plain words.
Behaviour: both versions evaluated on the same cases (both versions' tests, and an optional cohort); every
case whose decisions (topic, indicator, dose) differ is listed, with counts.
Whom it applies to (with a cohort): the cohort patients whose decisions change if the new version applies to all,
and if it applies to new therapies only (engine/choice.py), when those started before it do not get it.
"""
from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import fhir
from .certainty import Evaluator
from .choice import started_on
from .decide import decide, facts_from_record
from .document import plain_data
from .errors import EvaluationError
from .fhir import Extraction
from .model import Evaluation, Ruleset
from .runtime import Engine
from .templates import format_number
from .testing import case_facts


@dataclass
class Change:
    kind: str  # parameter | table | fact | rule | metadata
    name: str
    change: str  # added | removed | changed
    text: str


@dataclass
class CaseImpact:
    case: str
    date: str
    before: list[str]
    after: list[str]
    added: list[str]
    removed: list[str]


@dataclass
class Impact:
    cases_compared: int = 0
    changed: list[CaseImpact] = field(default_factory=list)
    topics_added: dict[str, int] = field(default_factory=dict)
    topics_removed: dict[str, int] = field(default_factory=dict)


@dataclass
class ChoiceImpact:
    """Cohort patients whose decisions change if the new version applies to all, and to new therapies only."""

    patients: int  # cohort patients compared
    if_all: list[str]  # the patients with a case that decides differently
    if_new_therapies: list[str] | None  # those of them whose therapy is new on such a day; None: cannot be told
    effective_from: str | None
    therapy_start: str | None  # the new version's therapy_start fact
    note: str = ""  # why the new-therapies count cannot be told


@dataclass
class VersionDiff:
    ruleset: str
    old: str
    new: str
    changes: list[Change]
    impact: Impact
    choice: ChoiceImpact | None = None  # with a cohort only

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- structure ------------------------------------------------------------------------------


def structural_changes(old: Ruleset, new: Ruleset) -> list[Change]:
    return document_changes(plain_data(old.source_text), plain_data(new.source_text))


def document_changes(a: dict[str, Any], b: dict[str, Any]) -> list[Change]:
    """The changes between two ruleset documents as read from YAML (a draft's text need not load to be diffed)."""
    changes = _named_changes("parameter", a.get("parameters", {}), b.get("parameters", {}), _describe_parameter)
    changes += _table_changes(a.get("tables", {}), b.get("tables", {}))
    changes += _named_changes("fact", a.get("facts", {}), b.get("facts", {}), lambda spec: spec.get("description", ""))
    rules_a = {r["id"]: r for r in a.get("rules", [])}
    rules_b = {r["id"]: r for r in b.get("rules", [])}
    changes += _named_changes("rule", rules_a, rules_b, lambda rule: rule.get("explanation", "").strip(),
                              _rule_change_text)
    for key in ("title", "description", "hooks", "medication", "protocol", "override_reasons", "clauses", "evidence",
                "review_by", "therapy_start"):
        if a.get(key) != b.get(key):
            changes.append(Change("metadata", key, "changed", f"{key} changed"))
    return changes


def _describe_parameter(spec: dict[str, Any]) -> str:
    return f"{_value(spec.get('value'))} {spec.get('unit', '')} [{spec.get('source', '')}]".replace("  ", " ")


def _value(value: Any) -> str:
    return format_number(value) if isinstance(value, (int, float)) else repr(value)


def _named_changes(kind: str, old: dict[str, Any], new: dict[str, Any], describe: Callable[[dict[str, Any]], str],
                   changed_text: Callable[[dict[str, Any], dict[str, Any]], str] | None = None) -> list[Change]:
    changes = []
    for name in old.keys() - new.keys():
        changes.append(Change(kind, name, "removed", f"{kind} {name} removed (was: {describe(old[name])})"))
    for name in new.keys() - old.keys():
        changes.append(Change(kind, name, "added", f"{kind} {name} added: {describe(new[name])}"))
    for name in old.keys() & new.keys():
        if old[name] != new[name]:
            text = changed_text(old[name], new[name]) if changed_text else \
                f"{describe(old[name])} -> {describe(new[name])}"
            changes.append(Change(kind, name, "changed", f"{kind} {name} changed: {text}"))
    return sorted(changes, key=lambda c: (c.kind, c.name))


def _rule_change_text(old: dict[str, Any], new: dict[str, Any]) -> str:
    parts = [part for part in ("when", "then", "explanation", "cites") if old.get(part) != new.get(part)]
    words = {"when": "its conditions", "then": "what it concludes", "explanation": "its explanation",
             "cites": "the protocol clauses it cites"}
    return "changed " + " and ".join(words[p] for p in parts)


def _rows(table: dict[str, Any]) -> dict[str, str]:
    return {row["band"]: _value(row["output"]) if not isinstance(row["output"], dict)
            else f"param {row['output']['param']}" for row in table.get("rows", [])}


def _table_changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    changes = _named_changes("table", {k: old[k] for k in old.keys() - new.keys()},
                             {k: new[k] for k in new.keys() - old.keys()}, lambda t: t.get("description", ""))
    for name in old.keys() & new.keys():
        before, after = _rows(old[name]), _rows(new[name])
        if before == after:
            continue
        removed = [f"{band} -> {out}" for band, out in before.items() if after.get(band) != out]
        added = [f"{band} -> {out}" for band, out in after.items() if before.get(band) != out]
        changes.append(Change("table", name, "changed",
                              f"table {name} rows changed: {'; '.join(removed)} became {'; '.join(added)}"))
    return changes


# --- behaviour ------------------------------------------------------------------------------


@dataclass
class Case:
    """One question asked of both versions: the facts (read once from a record, or written), a date and a hook."""

    name: str
    date: dt.date
    facts: Extraction
    hook: str | None = None


def signature(evaluation: Evaluation, dose_unit: str) -> list[str]:
    """Decisions as comparable text: topic, indicator and suggested dose."""
    found = []
    for d in evaluation.decisions:
        dose = "" if d.suggestion is None or d.suggestion.daily_dose is None \
            else f" {format_number(d.suggestion.daily_dose)} {dose_unit}"
        found.append(f"{d.topic} ({d.indicator}){dose}")
    return sorted(found)


def test_cases(*rulesets: Ruleset) -> list[Case]:
    """Both versions' written test cases, each once by name."""
    cases, seen = [], set()
    for ruleset in rulesets:
        for case in ruleset.tests:
            if case["name"] in seen:
                continue
            seen.add(case["name"])
            cases.append(Case(case["name"], dt.date.fromisoformat(str(case["date"])), case_facts(ruleset, case),
                              case.get("hook")))
    return cases


def behavioural_impact(old: Ruleset, new: Ruleset, cases: Iterable[Case],
                       engine: Evaluator | None = None) -> Impact:
    """Both versions' decisions on every case, compared; the evaluations run where `engine` runs them (the
    workbench's sandbox evaluates them in its child, many cases a call)."""
    engine, impact = engine or Engine(), Impact()
    added: Counter[str] = Counter()
    removed: Counter[str] = Counter()
    cases = list(cases)
    signatures = engine.each(_signatures, (old, new), cases, doing=f"comparing {old.ref} with {new.ref}")
    for case, (before, after) in zip(cases, signatures, strict=True):
        impact.cases_compared += 1
        if before == after:
            continue
        gained = [d for d in after if d not in before]
        lost = [d for d in before if d not in after]
        added.update(d.split(" ")[0] for d in gained)
        removed.update(d.split(" ")[0] for d in lost)
        impact.changed.append(CaseImpact(case.name, case.date.isoformat(), before, after, gained, lost))
    impact.topics_added, impact.topics_removed = dict(added), dict(removed)
    return impact


def _signatures(engine: Evaluator, old: Ruleset, new: Ruleset, case: Case) -> tuple[list[str], list[str]]:
    return _signature_or_error(engine, old, case), _signature_or_error(engine, new, case)


def _signature_or_error(engine: Evaluator, ruleset: Ruleset, case: Case) -> list[str]:
    try:
        evaluation = decide(engine, ruleset, case.facts, case.date, case.hook)
    except EvaluationError as exc:
        return [f"error: {exc}"]
    return signature(evaluation, ruleset.medication.dose_unit if ruleset.medication else "")


def cohort_cases(folder: str | Path, site_mapping: str | Path) -> list[Case]:
    """A generated cohort (cdsrules cohort generate): each patient on each of its evaluation dates."""
    from . import cohort  # only a cohort diff reads cohort files

    patients = [(f"{p.name} ({p.description})", p.resources, p.evaluation_dates)
                for p in cohort.read_cohort(Path(folder))]
    return record_cases(fhir.load_site_mapping(site_mapping), patients)


def record_cases(mapping: fhir.SiteMapping, patients: Iterable[tuple[str, list[dict[str, Any]], Iterable[dt.date]]],
                 hook: str = "patient-view") -> list[Case]:
    """Each patient's record as it stood on each of its dates, read once for both versions."""
    return [Case(name, day, facts_from_record(mapping, fhir.resources_as_of(resources, day), day), hook)
            for name, resources, days in patients for day in days]


def diff_versions(old: Ruleset, new: Ruleset, extra_cases: Iterable[Case] = (),
                  effective_from: dt.date | None = None) -> VersionDiff:
    """`extra_cases`: a cohort's, each patient's days under one name; `effective_from`: the new version's, by which
    the cohort's patients are split into those it applies to as new therapies and the others."""
    cohort = list(extra_cases)
    impact = behavioural_impact(old, new, test_cases(old, new) + cohort)
    choice = choice_impact(new, cohort, impact, effective_from) if cohort else None
    return VersionDiff(old.id, old.version, new.version, structural_changes(old, new), impact, choice)


def choice_impact(new: Ruleset, cohort: list[Case], impact: Impact, effective_from: dt.date | None) -> ChoiceImpact:
    """Which cohort patients decide differently if `new` applies to all, and if to new therapies only: then a day
    counts only when the patient's therapy (new's `therapy_start` fact) is not on record or began on or after
    `effective_from`, as engine.choice chooses in service."""
    changed = {(c.case, c.date) for c in impact.changed}
    differing = [case for case in cohort if (case.name, case.date.isoformat()) in changed]
    if_all = _names(differing)
    note = ""
    if new.therapy_start is None:
        note = f"{new.version} names no therapy_start fact: it can only apply to all"
    elif effective_from is None:
        note = f"{new.version} is not released: give --effective-from to count new therapies"
    if note:
        return ChoiceImpact(len(_names(cohort)), if_all, None, None, new.therapy_start, note)
    assert effective_from is not None
    new_therapies = [case for case in differing
                     if (start := started_on(new, case.facts.facts)) is None or start >= effective_from]
    return ChoiceImpact(len(_names(cohort)), if_all, _names(new_therapies), effective_from.isoformat(),
                        new.therapy_start)


def _names(cases: Iterable[Case]) -> list[str]:
    return list(dict.fromkeys(case.name for case in cases))  # each patient once, in cohort order


# --- rendering ------------------------------------------------------------------------------


def render_text(diff: VersionDiff) -> str:
    lines = [f"{diff.ruleset} {diff.old} -> {diff.new}", "", f"Structural changes ({len(diff.changes)}):"]
    lines += [f"  - {c.text}" for c in diff.changes] or ["  none"]
    impact = diff.impact
    lines += ["", f"Behavioural impact: {len(impact.changed)} of {impact.cases_compared} cases decide differently"]
    for topic, count in sorted(impact.topics_added.items()):
        lines.append(f"  + {topic}: {count} case(s)")
    for topic, count in sorted(impact.topics_removed.items()):
        lines.append(f"  - {topic}: {count} case(s)")
    for case in impact.changed:
        lines += ["", f"  {case.case} ({case.date})",
                  f"    {diff.old}: {', '.join(case.before) or 'no cards'}",
                  f"    {diff.new}: {', '.join(case.after) or 'no cards'}"]
    if diff.choice:
        lines += ["", _choice_heading(diff)]
        lines += [f"  {line}" for line in _choice_lines(diff.choice)]
    return "\n".join(lines)


def _choice_heading(diff: VersionDiff) -> str:
    choice = diff.choice
    assert choice is not None
    basis = f"; {diff.new} effective from {choice.effective_from}, therapy start `{choice.therapy_start}`" \
        if choice.effective_from else ""
    return f"Whom {diff.new} applies to (cohort of {choice.patients} patients{basis}):"


def _choice_lines(choice: ChoiceImpact) -> list[str]:
    lines = [f"if it applies to all: {_patients(choice.if_all)}"]
    if choice.if_new_therapies is None:
        lines.append(f"if it applies to new therapies only: cannot be told ({choice.note})")
    else:
        lines.append(f"if it applies to new therapies only: {_patients(choice.if_new_therapies)}")
    return lines


def _patients(names: list[str]) -> str:
    return f"{len(names)} patient(s) decide differently" + (f": {', '.join(names)}" if names else "")


def render_markdown(diff: VersionDiff) -> str:
    impact = diff.impact
    lines = [f"# {diff.ruleset} {diff.old} → {diff.new}", "", "## Structural changes", ""]
    lines += [f"- {c.text}" for c in diff.changes] or ["None."]
    lines += ["", "## Behavioural impact", "",
              f"{len(impact.changed)} of {impact.cases_compared} cases decide differently.", ""]
    if impact.changed:
        lines += [f"| case | date | {diff.old} | {diff.new} |", "|---|---|---|---|"]
        for case in impact.changed:
            lines.append(f"| {case.case} | {case.date} | {', '.join(case.before) or 'no cards'} | "
                         f"{', '.join(case.after) or 'no cards'} |")
    if impact.topics_added or impact.topics_removed:
        lines += ["", "| topic | cases gaining it | cases losing it |", "|---|---|---|"]
        for topic in sorted(set(impact.topics_added) | set(impact.topics_removed)):
            lines.append(f"| {topic} | {impact.topics_added.get(topic, 0)} | {impact.topics_removed.get(topic, 0)} |")
    if diff.choice:
        lines += ["", "## " + _choice_heading(diff).rstrip(":"), ""]
        lines += [f"- {line}" for line in _choice_lines(diff.choice)]
    return "\n".join(lines)
