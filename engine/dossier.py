"""The release dossier of one ruleset version, as data: what governance files for it.

The protocol source, the release record, each rule with the clauses it cites (and the rules citing none), the tests
and their results with what they cover against the ruleset's threshold, the behavioural impact against the
previous version, the open parameters, the source attributes and the review-by date. Generated from the files
every time, never stored; webhook/workbench/dossier.py renders it as HTML and PDF for the workbench and for
`cdsrules dossier`.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import fhir
from .coverage import Coverage, Threshold, coverage_of, shortfalls
from .diff import Case, VersionDiff, behavioural_impact, record_cases, structural_changes, test_cases
from .document import read_document
from .errors import RulesetErrors
from .evidence import Clause, cited_clauses, labelled_evidence, review_by
from .loader import find_site_mapping, load_ruleset, ruleset_files, site_for
from .model import Parameter, Rule, Ruleset
from .runtime import Engine
from .testing import CaseResult, run_tests
from .versions import MANIFEST, Release, file_sha256, read_manifest, read_threshold, version_key

# The cohort a dossier is measured on when none is given: the workbench's default (one block of every scenario).
COHORT_SIZE, COHORT_SEED = 24, 2026
RELEASE_FIELDS = ("version", "sha256", "effective_from", "effective_to", "approved_by", "released_at", "note")


@dataclass
class ReleaseRecord:
    """What the manifest records of the version (nothing for a draft) and the hash of the file as it is now."""

    file_sha256: str
    release: Release | None = None
    more: dict[str, Any] = field(default_factory=dict)  # fields a manifest entry holds beyond these (approvals...)

    @property
    def hash_ok(self) -> bool | None:
        return None if self.release is None else self.release.sha256 == self.file_sha256


@dataclass
class DossierRule:
    id: str
    line: int
    explanation: str
    topic: str | None
    clauses: list[Clause]


@dataclass
class Impact:
    """The diff against the previous version and what it was measured on."""

    previous: str
    diff: VersionDiff
    measured_on: str  # e.g. "both versions' 77 tests and 190 evaluations of a synthetic cohort of 24 patients"


@dataclass
class Dossier:
    ruleset: Ruleset
    generated_on: dt.date
    status: str  # draft | released | retired | released (not yet in effect)
    record: ReleaseRecord
    rules: list[DossierRule]
    tests: list[CaseResult]
    impact: Impact | None  # None for a first version
    evidence: list[tuple[str, Any]]  # (attribute as a reader says it, value), in HTI-1's order
    review_by: dt.date | None
    coverage: Coverage  # what the tests above exercise
    threshold: Threshold | None  # the ruleset's release threshold; None when its manifest cannot say

    @property
    def below(self) -> list[str]:
        """What the tests cover less of than the threshold asks (empty when met or unknown)."""
        return shortfalls(self.coverage, self.threshold) if self.threshold else []

    @property
    def uncited(self) -> list[DossierRule]:
        return [rule for rule in self.rules if not rule.clauses]

    @property
    def open_parameters(self) -> list[Parameter]:
        """Clinical choices still open: parameters whose source says a decision is pending."""
        return [p for p in self.ruleset.parameters.values() if "pending" in p.source]

    @property
    def protocol(self) -> dict[str, Any]:
        return dict(self.ruleset.metadata.get("protocol") or {})

    @property
    def citations(self) -> list[str]:
        return list(self.ruleset.metadata.get("citations") or [])

    @property
    def tests_passed(self) -> int:
        return sum(1 for r in self.tests if r.passed)


def build_dossier(ruleset: Ruleset, record: ReleaseRecord, tests: list[CaseResult], impact: Impact | None,
                  on: dt.date, threshold: Threshold | None) -> Dossier:
    return Dossier(ruleset=ruleset, generated_on=on, status=_status(record.release, on), record=record,
                   rules=[dossier_rule(rule, ruleset) for rule in ruleset.rules], tests=tests, impact=impact,
                   evidence=labelled_evidence(ruleset), review_by=review_by(ruleset),
                   coverage=coverage_of(ruleset, tests), threshold=threshold)


def dossier_rule(rule: Rule, ruleset: Ruleset) -> DossierRule:
    return DossierRule(rule.id, rule.line, rule.explanation, rule.decide.topic if rule.decide else None,
                       cited_clauses(rule, ruleset))


def release_record(file: Path, release: Release | None) -> ReleaseRecord:
    return ReleaseRecord(file_sha256(file), release, _more_fields(file.parent, file.stem) if release else {})


def measure_impact(previous: Ruleset, ruleset: Ruleset, cohort: list[Case] | None, cohort_size: int,
                   engine: Any = None) -> Impact:
    """engine.diff on both versions' tests and, when given, a cohort's cases (the engine may be the workbench's)."""
    tests = test_cases(previous, ruleset)
    diff = VersionDiff(ruleset.id, previous.version, ruleset.version, structural_changes(previous, ruleset),
                       behavioural_impact(previous, ruleset, tests + list(cohort or []), engine))
    measured = f"both versions' tests ({len(tests)} cases)"
    if cohort:
        measured += f" and a synthetic cohort of {cohort_size} patients ({len(cohort)} evaluations)"
    else:
        measured += " only: no cohort was given"
    return Impact(previous.version, diff, measured)


def previous_version(versions: list[str], version: str) -> str | None:
    """The greatest version below `version` among `versions` (semantic order)."""
    below = [v for v in versions if _semver(v) and version_key(v) < version_key(version)]
    return max(below, key=version_key) if below else None


def _semver(version: str) -> bool:
    try:
        version_key(version)
    except AttributeError:
        return False
    return True


def _status(release: Release | None, on: dt.date) -> str:
    if release is None:
        return "draft"
    if release.effective_to is not None and release.effective_to < on:
        return "retired"
    return "released" if release.effective_from <= on else "released (not yet in effect)"


def _more_fields(folder: Path, version: str) -> dict[str, Any]:
    """What the manifest entry of `version` holds beyond the fields read today (proposer, approvals...), as written,
    so a later manifest's fields show without this module knowing them."""
    data = read_document(folder / MANIFEST).data
    entries = data.get("releases", []) if isinstance(data, dict) else []
    entry = next((e for e in entries if isinstance(e, dict) and str(e.get("version")) == version), {})
    return {str(k): v for k, v in entry.items() if k not in RELEASE_FIELDS}


# --- from the files, for the command line -------------------------------------------------------


def dossier_from_files(rules_dir: Path, ruleset_id: str, version: str, on: dt.date, with_cohort: bool = True,
                       cohort_dir: Path | None = None) -> Dossier:
    """A dossier read from a rules directory: the version, its release, its tests and the impact against the
    version before it, measured on a cohort (written in `cohort_dir`, else generated) unless `with_cohort` is off."""
    folder = rules_dir / ruleset_id
    file = folder / f"{version}.yaml"
    if not file.is_file():
        raise OSError(f"no version {version} of ruleset '{ruleset_id}' under {rules_dir}")
    site = site_for(folder.resolve())
    ruleset = load_ruleset(file, site=site)
    engine = Engine()
    release = read_manifest(folder).get(version)
    impact = None
    previous = previous_version([f.stem for f in ruleset_files([folder])], version)
    if previous is not None:
        older = load_ruleset(folder / f"{previous}.yaml", site=site)
        patients = _cohort(rules_dir, folder, cohort_dir) if with_cohort else []
        cases = record_cases(fhir.load_site_mapping(find_site_mapping(folder.resolve())), patients) \
            if patients else []
        impact = measure_impact(older, ruleset, cases, len(patients), engine)
    return build_dossier(ruleset, release_record(file, release), run_tests(ruleset, engine), impact, on,
                         read_threshold(folder))


Patients = list[tuple[str, list[dict[str, Any]], list[dt.date]]]  # (name, resources, evaluation dates)


def _cohort(rules_dir: Path, folder: Path, cohort_dir: Path | None) -> Patients:
    """(name, resources, evaluation dates) of each patient: a written cohort, or one generated from the ruleset's
    scenario file (none without one, or without a release to draw it for)."""
    from . import cohort  # only a dossier measured on a cohort reads or draws one
    from .cohort.scenario import for_folder

    if cohort_dir is not None:
        return [(f"{p.name} ({p.description})", p.resources, list(p.evaluation_dates))
                for p in cohort.read_cohort(cohort_dir)]
    if not (folder / cohort.SCENARIO_FILE).is_file():
        return []
    try:
        ruleset, scenarios = for_folder(folder)
    except (OSError, RulesetErrors):
        return []
    return [(f"{p.name} ({p.description})", p.resources, list(p.evaluation_dates))
            for p in cohort.generate_cohort(max(COHORT_SIZE, len(scenarios.block)), COHORT_SEED, ruleset=ruleset,
                                            scenarios=scenarios, rules_dir=rules_dir)]
