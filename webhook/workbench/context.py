"""What the workbench reads: every ruleset version on disk (drafts and broken files included), its release, the
site mapping and a synthetic cohort; each made again when a file under the rules directory (or the written cohort)
changes.

The service itself serves released versions only and refuses to start on a broken file; the workbench is where a
pharmacist sees drafts and broken files, so each version is loaded on its own and its errors are kept beside it.
"""
from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from engine import cohort, fhir
from engine.cohort.scenario import for_folder
from engine.errors import RulesetError, RulesetErrors
from engine.loader import SITE_MAPPING, load_ruleset, ruleset_files
from engine.model import Ruleset
from engine.runtime import Engine
from engine.sandbox import SandboxEngine
from engine.testing import CaseResult, run_tests
from engine.versions import MANIFEST, Release, file_sha256, read_manifest, version_key

COHORT_SIZE, COHORT_SEED = 24, 2026  # one block of the generator's scenarios: every scenario once or more
CHECKS_KEPT = 8  # proposals' checks kept per process, the newest (each holds its loaded draft)
T = TypeVar("T")


@dataclass
class VersionInfo:
    """One version file: the loaded ruleset (None when it does not load), its errors, release and hash check."""

    ruleset_id: str
    version: str
    path: Path
    ruleset: Ruleset | None
    errors: list[RulesetError]
    release: Release | None
    hash_ok: bool | None  # None for a draft: nothing recorded to compare with
    _results: list[CaseResult] | None = None

    @property
    def ref(self) -> str:
        return f"{self.ruleset_id}@{self.version}"

    def status(self, on: dt.date) -> str:
        if self.release is None:
            return "draft"
        if self.release.effective_to is not None and self.release.effective_to < on:
            return "retired"
        return "released" if self.release.effective_from <= on else "released (not yet in effect)"

    def results(self, engine: Engine | SandboxEngine) -> list[CaseResult]:
        """The version's written tests, run once per loaded file."""
        if self._results is None:
            self._results = run_tests(self.ruleset, engine) if self.ruleset else []
        return self._results


@dataclass
class Snapshot:
    """The rules directory as it was at one moment."""

    versions: dict[str, dict[str, VersionInfo]]  # ruleset id -> version -> info, versions in semver order
    manifest_errors: dict[str, list[RulesetError]]
    mapping: fhir.SiteMapping | None
    mapping_data: dict  # the site mapping as written, for showing which codes feed which fact
    mapping_errors: list[str]

    def find(self, ruleset_id: str, version: str) -> VersionInfo | None:
        return self.versions.get(ruleset_id, {}).get(version)

    def loaded(self) -> list[VersionInfo]:
        return [info for versions in self.versions.values() for info in versions.values() if info.ruleset]


@dataclass
class Workbench:
    """Per process: the rules directory, a cache of its snapshot, the engine, the store and the clock."""

    rules_dir: Path
    engine: SandboxEngine
    store: Any  # store.Store
    clock: Callable[[], dt.date]
    cohort_dir: Path | None = None
    _snapshot: Snapshot | None = None
    _stamp: tuple = ()
    _cohorts: dict[str | None, list] = field(default_factory=dict)
    _cohorts_stamp: tuple = ()  # the stamp of the rules directory (and written cohort) they were made from
    _checks: dict[tuple, Any] = field(default_factory=dict)  # (ruleset, text sha256, stamp) -> check, oldest first
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cohort_lock: threading.Lock = field(default_factory=threading.Lock)  # apart: generating one takes seconds
    sandbox_seat: threading.Lock = field(default_factory=threading.Lock)  # held by the request using the engine

    def snapshot(self) -> Snapshot:
        """The current snapshot; rebuilt only when a file under the rules directory changed."""
        stamp = _stamp(self.rules_dir)
        with self._lock:
            if self._snapshot is None or stamp != self._stamp:
                self._snapshot, self._stamp = load_snapshot(self.rules_dir), stamp
            return self._snapshot

    def checked(self, ruleset_id: str, sha256: str, check: Callable[[], T]) -> T:
        """The check of a text, made once while the rules directory stays as it is: a proposal's text never changes,
        and its review page, dossier and approvals each show its check. A check that raises is not kept."""
        key = (ruleset_id, sha256, _stamp(self.rules_dir))
        with self._lock:
            if key in self._checks:
                found: T = self._checks[key]
                return found
        made = check()
        with self._lock:
            self._checks[key] = made
            while len(self._checks) > CHECKS_KEPT:
                del self._checks[next(iter(self._checks))]
        return made

    def ruleset_ids(self) -> list[str]:
        """The ruleset folders, without loading anything (for pickers on pages that evaluate nothing)."""
        return sorted({file.parent.name for file in ruleset_files([self.rules_dir])})

    def cohort(self, ruleset_id: str | None = None) -> list[CohortPatient]:
        """Synthetic patients to try rulesets on: a written cohort if configured, else one generated for the ruleset
        (from its own scenario file, when it has one; otherwise the default cohort of the rules directory)."""
        if self.cohort_dir:
            ruleset_id = None
        elif ruleset_id is not None and not (self.rules_dir / ruleset_id / cohort.SCENARIO_FILE).is_file():
            ruleset_id = None
        stamp = _stamp(self.rules_dir) + (_stamp(self.cohort_dir) if self.cohort_dir else ())
        with self._cohort_lock:  # once per ruleset: a page asked for twice at once waits for the first to finish
            if stamp != self._cohorts_stamp:  # a scenario file, the site mapping or the written cohort changed
                self._cohorts, self._cohorts_stamp = {}, stamp
            if ruleset_id not in self._cohorts:
                self._cohorts[ruleset_id] = _read_cohort(self.cohort_dir) if self.cohort_dir else [
                    CohortPatient(p.name, p.description, p.resources, p.transplant_date, p.evaluation_dates)
                    for p in _generate(self.rules_dir, ruleset_id)]
            return self._cohorts[ruleset_id]

    def patient(self, name: str, ruleset_id: str | None = None) -> CohortPatient | None:
        return next((p for p in self.cohort(ruleset_id) if p.name == name), None)


def _generate(rules_dir: Path, ruleset_id: str | None) -> list[cohort.CohortPatient]:
    if ruleset_id is None:
        return cohort.generate_cohort(COHORT_SIZE, COHORT_SEED, rules_dir=rules_dir)
    ruleset, scenarios = for_folder(rules_dir / ruleset_id)
    return cohort.generate_cohort(max(COHORT_SIZE, len(scenarios.block)), COHORT_SEED, ruleset=ruleset,
                                  scenarios=scenarios, rules_dir=rules_dir)


@dataclass(frozen=True)
class CohortPatient:
    name: str
    description: str
    resources: list[dict]
    day0: dt.date  # the transplant date (day 0 of the timeline)
    dates: list[dt.date]  # the dates worth evaluating


def _read_cohort(folder: Path) -> list[CohortPatient]:
    """A cohort written by `cdsrules cohort generate`; day 0 is each patient's transplant date from the index."""
    index = json.loads((folder / cohort.INDEX_FILE).read_text(encoding="utf-8"))["patients"]
    return [CohortPatient(case.name, case.description, case.resources,
                          dt.date.fromisoformat(entry["transplant_date"]), case.evaluation_dates)
            for case, entry in zip(cohort.read_cohort(folder), index, strict=True)]


def _stamp(folder: Path) -> tuple:
    """Names, sizes and modification times of every file the workbench reads under a folder."""
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".yaml", ".yml", ".json"):
            stat = path.stat()
            found.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(found)


def load_snapshot(rules_dir: Path) -> Snapshot:
    versions: dict[str, dict[str, VersionInfo]] = {}
    manifest_errors: dict[str, list[RulesetError]] = {}
    for file in ruleset_files([rules_dir]):
        folder = file.parent
        if folder.name not in versions:
            versions[folder.name] = {}
            releases, manifest_errors[folder.name] = _releases(folder)
        versions[folder.name][file.stem] = _version(folder.name, file, releases)
    ordered = {rid: dict(sorted(found.items(), key=lambda item: _version_order(item[0])))
               for rid, found in sorted(versions.items())}
    mapping, mapping_data, mapping_errors = _mapping(rules_dir / SITE_MAPPING)
    return Snapshot(ordered, {k: v for k, v in manifest_errors.items() if v}, mapping, mapping_data, mapping_errors)


def _version_order(version: str) -> tuple:
    try:
        return (0, version_key(version))
    except AttributeError:  # not a semantic version: after the others
        return (1, version)


def _releases(folder: Path) -> tuple[dict[str, Release], list[RulesetError]]:
    try:
        return read_manifest(folder), []
    except RulesetErrors as exc:
        return {}, exc.errors


def _version(ruleset_id: str, file: Path, releases: dict[str, Release]) -> VersionInfo:
    try:
        ruleset, errors = load_ruleset(file), []
    except RulesetErrors as exc:
        ruleset, errors = None, exc.errors
    release = releases.get(file.stem)
    hash_ok = None if release is None else file_sha256(file) == release.sha256
    if hash_ok is False:
        errors = errors + [RulesetError(str(file), 0, 0, (), f"released file was modified: {MANIFEST} records "
                                                            f"sha256 {release.sha256[:12]}…; the service refuses it")]
    return VersionInfo(ruleset_id, file.stem, file, ruleset, errors, release, hash_ok)


def _mapping(path: Path) -> tuple[fhir.SiteMapping | None, dict, list[str]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        return None, {}, [f"{path}: {exc}"]
    try:
        return fhir.load_site_mapping(path), data, []
    except fhir.MappingError as exc:
        return None, data, [str(e) for e in exc.errors]
