"""The Rulesets page (every version with status, release, hash and tests) and the page of one version
(parameters, tables as bands, rules in plain language, the site mapping that feeds it, tests and results, and what
those tests cover against the ruleset's threshold)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flask import render_template

from engine.coverage import Threshold, coverage_of, shortfalls
from engine.errors import RulesetErrors
from engine.evidence import clauses, labelled_evidence, review_by
from engine.explain import describe_condition
from engine.model import Derivation, Rule, Ruleset
from engine.versions import Release, read_threshold, taken_over
from webhook.workbench import saved, svg
from webhook.workbench.context import VersionInfo
from webhook.workbench.views import find_version, sandbox, snapshot, today


def rulesets() -> str:
    shot, engine = snapshot(), sandbox()
    results = {info.ref: info.results(engine) for info in shot.loaded()}
    drafts, drafts_problem = saved.listed()
    return render_template("rulesets.html", snapshot=shot, results=results, on=today(), saved=drafts,
                           saved_problem=drafts_problem, taken_over=_taken_over(shot.versions))


def _taken_over(versions: dict[str, dict[str, VersionInfo]]) -> dict[str, dict[str, Release]]:
    """Per ruleset, each released version a lower one takes over from on a later date: version -> that release."""
    found: dict[str, dict[str, Release]] = {}
    for ruleset_id, infos in versions.items():
        releases = {version: info.release for version, info in infos.items() if info.release}
        found[ruleset_id] = {mine.version: later for mine, later in taken_over(releases)}
    return found


def version(ruleset_id: str, version: str) -> str:
    info = find_version(ruleset_id, version)
    ruleset = info.ruleset
    shot = snapshot()
    siblings = list(shot.versions[ruleset_id])
    results = info.results(sandbox())
    coverage, threshold = coverage_of(ruleset, results), ruleset_threshold(info.path.parent)
    return render_template(
        "version.html", info=info, ruleset=ruleset, on=today(), siblings=siblings,
        charts={name: svg.table_chart(table, ruleset) for name, table in ruleset.tables.items()},
        rules=[plain_rule(rule, ruleset) for rule in ruleset.rules],
        mapping=mapping_rows(shot.mapping_data, ruleset), unmapped=unmapped_facts(shot.mapping_data, ruleset),
        results=results, mapping_errors=shot.mapping_errors, coverage=coverage, threshold=threshold,
        below=shortfalls(coverage, threshold) if threshold else [], clauses=clauses(ruleset),
        evidence=labelled_evidence(ruleset), review_by=review_by(ruleset))


def ruleset_threshold(folder: Path) -> Threshold | None:
    """The coverage threshold of the ruleset's manifest; None when the manifest is invalid (the page says why)."""
    try:
        return read_threshold(folder)
    except RulesetErrors:
        return None


# --- rules in plain language ------------------------------------------------------------------


@dataclass
class PlainRule:
    id: str
    line: int
    explanation: str
    when: list[str]
    then: list[str]
    topic: str | None
    indicator: str | None
    cites: tuple[str, ...] = ()


def plain_rule(rule: Rule, ruleset: Ruleset) -> PlainRule:
    then = [f"{d.fact} = {describe_derivation(d)}" for d in rule.derive]
    then += [f"add to {d.fact}: “{' '.join(str(d.source).split())}”" for d in rule.append]
    if rule.decide:
        card = f"card “{rule.decide.topic}” ({rule.decide.indicator}): {' '.join(rule.decide.summary.split())}"
        if rule.decide.suggestion:
            card += f" — suggests {rule.decide.suggestion.action}"
        then.append(card)
    return PlainRule(rule.id, rule.line, rule.explanation, describe_condition(rule.when, ruleset),
                     then, rule.decide.topic if rule.decide else None, rule.decide.indicator if rule.decide else None,
                     rule.cites)


def describe_derivation(d: Derivation) -> str:
    if d.kind == "table":
        return f"the row of table {d.source[0]} for {d.source[1]}"
    if d.kind == "param":
        return f"parameter {d.source}"
    if d.kind == "fact":
        return f"the value of {d.source}"
    if d.kind == "expr":
        return str(d.source)
    return str(d.source).lower() if isinstance(d.source, bool) else str(d.source)


# --- the site mapping, as it feeds this ruleset --------------------------------------------------


@dataclass
class MappingRow:
    kind: str  # observation | condition | procedure | medication | patient
    concept: str
    facts: list[str]
    read: list[str]  # the facts of this row the ruleset reads
    codes: list[tuple[str, str, str]]  # (short system name, uri, code)
    detail: str  # unit and conversions, name patterns


def mapping_rows(data: dict, ruleset: Ruleset) -> list[MappingRow]:
    """Which codes feed which fact, for every concept of the mapping; the ruleset's inputs marked."""
    inputs = {name for name, spec in ruleset.facts.items() if not spec.derived}
    systems = {name: (spec.get("uris") or [""])[0] for name, spec in (data.get("systems") or {}).items()}
    rows = []
    patient = data.get("patient") or {}
    if patient:
        facts = [f for f in (patient.get("birth_date_fact"), patient.get("age_fact")) if f]
        rows.append(MappingRow("patient", "patient", facts, [f for f in facts if f in inputs],
                               [("FHIR", "", "Patient.birthDate")], "age in completed years"))
    for name, spec in (data.get("observations") or {}).items():
        uln = spec.get("uln") or {}
        facts = [f for f in (spec.get("value_fact"), spec.get("date_fact"), uln.get("fact"), uln.get("source_fact"))
                 if f]
        detail = (f"unit {spec['unit']}; accepts {', '.join(spec.get('conversions', {}))}" if spec.get("unit")
                  else "a score" if spec.get("score") else "")
        rows.append(_row("observation", name, spec, facts, inputs, systems, detail))
    for kind in ("conditions", "procedures"):
        for name, spec in (data.get(kind) or {}).items():
            rows.append(_row(kind[:-1], name, spec, list((spec.get("facts") or {}).values()), inputs, systems, ""))
    for name, spec in (data.get("medications") or {}).items():
        detail = "or a name containing " + ", ".join(spec.get("name_patterns", [])) if spec.get("name_patterns") else ""
        rows.append(_row("medication", name, spec, list((spec.get("facts") or {}).values()), inputs, systems, detail))
    return rows


def _row(kind: str, name: str, spec: dict, facts: list[str], inputs: set[str], systems: dict[str, str],
         detail: str) -> MappingRow:
    codes = [(group.get("system", ""), systems.get(group.get("system", ""), ""),
              str(code) + ("…" if group.get("prefix") else ""))
             for group in spec.get("codes") or [] for code in group.get("codes") or []]
    return MappingRow(kind, name, facts, [f for f in facts if f in inputs], codes, detail)


def unmapped_facts(data: dict, ruleset: Ruleset) -> list[str]:
    """Input facts of the ruleset that no concept of the mapping produces: they arrive only as written facts."""
    fed = {f for row in mapping_rows(data, ruleset) for f in row.facts}
    return sorted(name for name, spec in ruleset.facts.items() if not spec.derived and name not in fed)
