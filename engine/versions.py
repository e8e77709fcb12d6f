"""Released rule versions: the manifest beside the files, immutability by hash, and selection by date.

Lifecycle: a version file not in its ruleset's manifest (`rules/<id>/releases.yaml`) is a draft: validated,
tested and shown in tools, never served. `release` records a version with the sha256 of its bytes; from then
on a file whose bytes differ is refused. `retire` ends a version's effect. The version in effect on a date is the
released one with the latest `effective_from` on or before it that is not retired on that date.

A manifest may name its ruleset's governance (`governance: {approvals_required: N}`, engine/governance.py): a
release then needs N approvals of its bytes by people other than its proposer, or an emergency reason, which the
manifest records beside it.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from .certainty import Evaluator
from .coverage import THRESHOLD_KEY, Threshold, coverage_of, shortfalls
from .document import Document, read_document, schema_errors
from .errors import RulesetError, RulesetErrors
from .governance import Approval, Governance, governance_from, shortfall
from .loader import load_ruleset, ruleset_files, site_for
from .model import Ruleset
from .testing import run_tests

MANIFEST = "releases.yaml"
RELOAD_MARKER = ".reload"  # `cdsrules reload` touches <rules>/.reload; every server worker watching it reloads
MANIFEST_SCHEMA = "releases.schema.json"
APPLIES_TO_ALL, APPLIES_TO_NEW_THERAPIES = "all", "new-therapies"  # whom a release applies to (engine/choice.py)
_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?$")


def is_version(text: str) -> bool:
    """A semantic version (1.2.0, 1.2.0-rc.1): what version_key can order."""
    return _SEMVER.match(text) is not None


@functools.lru_cache(maxsize=1024)
def version_key(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
    """Semantic-version order: 1.2.0-rc.1 < 1.2.0 < 1.10.0. Each version string is read once: choosing the version
    in effect sorts by it on every call and for every service of discovery."""
    match = _SEMVER.match(version)
    if match is None:  # AttributeError, as before: the workbench catches it to sort other versions after these
        raise AttributeError(f"{version!r} is not a semantic version")
    major, minor, patch, pre = match.groups()
    pre_key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")) if pre else ()
    return int(major), int(minor), int(patch), 0 if pre else 1, pre_key


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class Release:
    version: str
    sha256: str
    effective_from: dt.date
    approved_by: str
    released_at: str
    effective_to: dt.date | None = None
    note: str = ""
    applies_to: str = APPLIES_TO_ALL  # new-therapies: only therapies started on or after effective_from
    proposed_by: str = ""  # governed releases: who proposed it; `approved_by` then names the approvers
    approvals: tuple[Approval, ...] = ()
    emergency_reason: str = ""  # a governed ruleset released without its approvals, and why

    def in_effect(self, on: dt.date) -> bool:
        """Effective from `effective_from` through `effective_to`, both days included."""
        return self.effective_from <= on and (self.effective_to is None or on <= self.effective_to)

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "version": self.version, "sha256": self.sha256, "effective_from": self.effective_from.isoformat(),
            "approved_by": self.approved_by, "released_at": self.released_at}
        if self.effective_to:
            data["effective_to"] = self.effective_to.isoformat()
        if self.note:
            data["note"] = self.note
        if self.applies_to != APPLIES_TO_ALL:  # entries that apply to all keep the form they were written in
            data["applies_to"] = self.applies_to
        if self.proposed_by:
            data["proposed_by"] = self.proposed_by
        if self.approvals:
            data["approvals"] = [a.as_dict() for a in self.approvals]
        if self.emergency_reason:
            data["emergency_reason"] = self.emergency_reason
        return data


@dataclass
class RulesetVersions:
    """One ruleset's versions: every file (drafts included) and its releases."""

    id: str
    folder: Path
    rulesets: dict[str, Ruleset] = field(default_factory=dict)  # version -> loaded ruleset
    releases: dict[str, Release] = field(default_factory=dict)  # version -> release

    def status(self, version: str, on: dt.date) -> str:
        release = self.releases.get(version)
        if release is None:
            return "draft"
        if release.effective_to is not None and release.effective_to < on:
            return "retired"
        return "released"

    def select(self, on: dt.date) -> Ruleset | None:
        """The released version in effect on a date, or None."""
        chosen = chosen_on(self.releases, on)
        return None if chosen is None else self.rulesets[chosen.version]


@dataclass
class Catalog:
    """Every ruleset under a rules directory, verified against its manifest."""

    root: Path
    rulesets: dict[str, RulesetVersions]
    fingerprint: str  # changes whenever any served file or manifest changes

    def select(self, ruleset_id: str, on: dt.date) -> Ruleset | None:
        versions = self.rulesets.get(ruleset_id)
        return versions.select(on) if versions else None

    def served_ids(self) -> list[str]:
        """Rulesets with at least one release: their services exist whatever the date."""
        return sorted(i for i, v in self.rulesets.items() if v.releases)

    def latest_released(self, ruleset_id: str) -> Ruleset:
        versions = self.rulesets[ruleset_id]
        return versions.rulesets[max(versions.releases, key=version_key)]


def chosen_on(releases: dict[str, Release], day: dt.date) -> Release | None:
    """The release that decides on a day: of those in effect, the latest effective date, then the greatest version."""
    in_effect = [r for r in releases.values() if r.in_effect(day)]
    return max(in_effect, key=lambda r: (r.effective_from, version_key(r.version)), default=None)


def taking_effect_after(releases: dict[str, Release], day: dt.date) -> list[Release]:
    """Released versions whose effective date is after `day` (none retired before its own first day), by that date.
    A version starting on `day` decides only until the first of them, whatever the version numbers (`chosen_on`)."""
    later = [r for r in releases.values() if r.effective_from > day and r.in_effect(r.effective_from)]
    return sorted(later, key=lambda r: (r.effective_from, version_key(r.version)))


def taken_over(releases: dict[str, Release]) -> list[tuple[Release, Release]]:
    """(version, lower version) for each lower version that decides from its own later effective date, a day the
    first would still be in effect: a fix undone on the date of an amendment scheduled before it."""
    return [(mine, later) for mine in sorted(releases.values(), key=lambda r: version_key(r.version))
            for later in taking_effect_after(releases, mine.effective_from)
            if version_key(later.version) < version_key(mine.version) and mine.in_effect(later.effective_from)
            and chosen_on(releases, later.effective_from) is later]


def load_catalog(root: str | Path) -> Catalog:
    """Load, validate and verify every version; raises RulesetErrors listing every problem."""
    root = Path(root)
    errors: list[RulesetError] = []
    found: dict[str, RulesetVersions] = {}
    digest = hashlib.sha256()
    site = site_for(root.resolve())
    for file in ruleset_files([root]):
        versions = found.setdefault(file.parent.name, RulesetVersions(file.parent.name, file.parent))
        try:
            ruleset = load_ruleset(file, site=site)
        except RulesetErrors as exc:
            errors.extend(exc.errors)
            continue
        versions.rulesets[ruleset.version] = ruleset
    for versions in found.values():
        try:
            versions.releases = read_manifest(versions.folder)
        except RulesetErrors as exc:
            errors.extend(exc.errors)
            continue
        errors.extend(_verify(versions))
        for version in sorted(versions.releases, key=version_key):
            digest.update(f"{versions.id}@{version}:{versions.releases[version].as_dict()}".encode())
    if errors:
        raise RulesetErrors(errors)
    return Catalog(root, found, digest.hexdigest()[:16])


def _manifest_document(folder: str | Path) -> Document | None:
    """The ruleset's manifest, checked against its schema (RulesetErrors if it fails); None when there is none."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    doc = read_document(path)
    errors = schema_errors(doc, MANIFEST_SCHEMA)
    if errors:
        raise RulesetErrors(errors)
    return doc


def read_manifest(folder: Path) -> dict[str, Release]:
    doc = _manifest_document(folder)
    if doc is None:
        return {}
    releases: dict[str, Release] = {}
    data = doc.data if isinstance(doc.data, dict) else {}  # the schema requires a mapping
    for index, item in enumerate(data.get("releases", [])):
        if item["version"] in releases:
            raise RulesetErrors([doc.error(("releases", index, "version"),
                                           f"version {item['version']} is released twice")])
        releases[item["version"]] = Release(
            version=item["version"], sha256=item["sha256"], effective_from=_date(item["effective_from"]),
            approved_by=item["approved_by"], released_at=str(item["released_at"]),
            effective_to=_date(item["effective_to"]) if item.get("effective_to") else None,
            note=item.get("note", ""), applies_to=item.get("applies_to", APPLIES_TO_ALL),
            proposed_by=item.get("proposed_by", ""),
            approvals=tuple(Approval(a["approver"], str(a["approved_at"]), a.get("comment", ""))
                            for a in item.get("approvals", [])),
            emergency_reason=item.get("emergency_reason", ""))
    return releases


def read_threshold(folder: Path) -> Threshold:
    """The ruleset's coverage threshold from its manifest (`coverage:`); the default when it names none."""
    doc = _manifest_document(folder)
    return Threshold() if doc is None else Threshold.from_manifest(doc.data)


def _date(value: object) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def verify_folder(folder: Path) -> list[RulesetError]:
    """Manifest problems and modified released files in one ruleset folder."""
    try:
        return _verify(RulesetVersions(folder.name, folder, releases=read_manifest(folder)))
    except RulesetErrors as exc:
        return exc.errors


def _verify(versions: RulesetVersions) -> list[RulesetError]:
    """Released files must exist and be byte-for-byte what was released."""
    errors = []
    manifest = str(versions.folder / MANIFEST)
    for version, release in versions.releases.items():
        path = versions.folder / f"{version}.yaml"
        if not path.exists():
            errors.append(RulesetError(manifest, 0, 0, ("releases", version),
                                       f"released version {version} has no file {path}"))
            continue
        actual = file_sha256(path)
        if actual != release.sha256:
            errors.append(RulesetError(str(path), 0, 0, (),
                                       f"released file was modified: recorded sha256 {release.sha256}, file has "
                                       f"{actual}. Released versions are immutable: release a new version instead."))
    return errors


# --- release and retire ---------------------------------------------------------------------


class ReleaseRefused(Exception):
    """A release or retirement that governance rules do not allow; the message says why."""


def release(file: str | Path, effective_from: dt.date, approved_by: str, note: str = "",
            now: dt.datetime | None = None, applies_to: str = APPLIES_TO_ALL, proposed_by: str = "",
            approvals: tuple[Approval, ...] = (), emergency_reason: str = "",
            engine: Evaluator | None = None) -> Release:
    """Record a draft as released. Under governance the approvals (of exactly this file's bytes, as the caller
    found them) must suffice, or an emergency reason is recorded instead; `approved_by` then defaults to the
    approvers' names. Its tests run on `engine` (a server passes its sandbox: not its own, which answers the EHR)."""
    file = Path(file)
    ruleset = load_ruleset(file)  # raises RulesetErrors when invalid
    folder = file.parent
    releases = read_manifest(folder)
    _check_governance(read_governance(folder), proposed_by, approvals, emergency_reason)
    approved_by = approved_by.strip() or ", ".join(dict.fromkeys(a.approver for a in approvals))
    if ruleset.version in releases:
        raise ReleaseRefused(f"{ruleset.ref} is already released; released versions never change")
    newer = [v for v in releases if version_key(v) >= version_key(ruleset.version)]
    if newer:
        raise ReleaseRefused(f"{ruleset.version} is not greater than released version(s) {', '.join(sorted(newer))}")
    results = run_tests(ruleset, engine)
    failed = [r for r in results if not r.passed]
    if failed:
        names = "; ".join(f"{r.name}: {r.differences[0]}" for r in failed[:5])
        raise ReleaseRefused(f"{len(failed)} test(s) of {ruleset.ref} fail: {names}")
    if not ruleset.tests:
        raise ReleaseRefused(f"{ruleset.ref} has no tests; a release needs tests that pass")
    below = shortfalls(coverage_of(ruleset, results), read_threshold(folder))
    if below:
        raise ReleaseRefused(f"the tests of {ruleset.ref} cover less than the ruleset's threshold ({MANIFEST}, "
                             f"`{THRESHOLD_KEY}`): " + "; ".join(below))
    if not approved_by.strip():
        raise ReleaseRefused("a release needs the approver (--approved-by)")
    if applies_to == APPLIES_TO_NEW_THERAPIES and ruleset.therapy_start is None:
        raise ReleaseRefused(f"{ruleset.ref} names no therapy_start fact, so whether a therapy started before "
                             "its effective date cannot be told; it can only apply to all")
    stamp = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0).isoformat()
    entry = Release(ruleset.version, file_sha256(file), effective_from, approved_by.strip(), stamp, note=note,
                    applies_to=applies_to, proposed_by=proposed_by, approvals=tuple(approvals),
                    emergency_reason=emergency_reason.strip())
    releases[entry.version] = entry
    _write_manifest(folder, ruleset.id, releases)
    return entry


def _check_governance(governance: Governance, proposed_by: str, approvals: tuple[Approval, ...],
                      emergency_reason: str) -> None:
    if not governance.configured or emergency_reason.strip():
        return
    refusal = shortfall(governance, proposed_by, approvals)
    if refusal:
        raise ReleaseRefused(f"{refusal}; approve a proposal in the workbench, or give an emergency reason")


def read_governance(folder: str | Path) -> Governance:
    """The ruleset's governance from its manifest (`governance:`); none when it names none or does not exist."""
    doc = _manifest_document(folder)
    if doc is None:
        return Governance()
    return governance_from(doc.data.get("governance") if isinstance(doc.data, dict) else None)


def retire(folder: str | Path, version: str, effective_to: dt.date) -> Release:
    folder = Path(folder)
    releases = read_manifest(folder)
    if version not in releases:
        raise ReleaseRefused(f"version {version} is not released in {folder}")
    current = releases[version]
    if effective_to < current.effective_from:
        raise ReleaseRefused(f"effective-to {effective_to} is before effective-from {current.effective_from}")
    releases[version] = replace(current, effective_to=effective_to)
    _write_manifest(folder, folder.name, releases)
    return releases[version]


def _write_manifest(folder: Path, ruleset_id: str, releases: dict[str, Release]) -> None:
    """Write atomically: a reader sees the old manifest or the new one, never half of one."""
    body = {"ruleset": ruleset_id, **_kept_settings(folder), **_governance_section(folder),
            "releases": [releases[v].as_dict() for v in sorted(releases, key=version_key)]}
    text = ("# Released versions of this ruleset. Written by `cdsrules release` / `cdsrules retire`;\n"
            "# a released file must keep the sha256 recorded here.\n"
            + yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=".releases.", suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, folder / MANIFEST)


def _kept_settings(folder: Path) -> dict[str, object]:
    """What the manifest says besides its releases (the coverage threshold), kept as written when it is rewritten."""
    path = folder / MANIFEST
    data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    return {THRESHOLD_KEY: data[THRESHOLD_KEY]} if isinstance(data, dict) and THRESHOLD_KEY in data else {}


def _governance_section(folder: Path) -> dict[str, object]:
    """The manifest's governance, kept as written when it is rewritten: releasing never changes its rules."""
    governance = read_governance(folder)
    return {"governance": governance.as_dict()} if governance.configured else {}
