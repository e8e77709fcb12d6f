"""Governance's warnings on released versions: the version in effect past its review-by date, or without one; and a
version that a lower one takes over from on a later effective date (the latest effective date is chosen, whatever the
number, so a later fix is undone on an earlier amendment's date). Warnings, never refusals: the service keeps serving
what the manifests say until a new version is released."""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import RulesetErrors
from .evidence import review_by
from .model import Ruleset
from .versions import Release, RulesetVersions, read_manifest, taken_over


@dataclass(frozen=True)
class ReviewWarning:
    file: str
    message: str


def review_warnings(rulesets: Iterable[Ruleset], on: dt.date) -> list[ReviewWarning]:
    """For each ruleset folder among `rulesets`, the version in effect on `on` if it is past its review-by date or has
    none (a folder whose version in effect is not among `rulesets`, one draft validated alone, is not judged), and
    each released version a lower one takes over from. The manifest is read once per folder."""
    folders: dict[Path, dict[str, Ruleset]] = {}
    for ruleset in rulesets:
        folders.setdefault(Path(ruleset.source_file).parent, {})[ruleset.version] = ruleset
    warnings = []
    for folder, loaded in sorted(folders.items()):
        try:
            releases = read_manifest(folder)
        except RulesetErrors:
            continue  # the manifest's own errors are reported by the check of released files
        in_effect = _in_effect(folder, loaded, releases, on)
        if in_effect is not None:
            warnings += _judge(in_effect, on)
        warnings += _taken_over(folder, releases)
    return warnings


def _in_effect(folder: Path, loaded: dict[str, Ruleset], releases: dict[str, Release], on: dt.date) -> Ruleset | None:
    try:
        return RulesetVersions(folder.name, folder, loaded, releases).select(on)
    except KeyError:
        return None


def _taken_over(folder: Path, releases: dict[str, Release]) -> list[ReviewWarning]:
    return [ReviewWarning(str(folder / f"{mine.version}.yaml"),
                          f"{folder.name}@{mine.version} decides only until {later.effective_from}: "
                          f"{folder.name}@{later.version}, a lower version, takes effect that day and decides from "
                          "then on (the latest effective date is chosen, whatever the number): release a successor "
                          "effective from then that keeps this version's changes")
            for mine, later in taken_over(releases)]


def _judge(ruleset: Ruleset, on: dt.date) -> list[ReviewWarning]:
    due = review_by(ruleset)
    if due is None:
        return [ReviewWarning(ruleset.source_file, f"{ruleset.ref}, the released version in effect on {on}, has no "
                                                   "review-by date (review_by): set one in the next version")]
    if due < on:
        return [ReviewWarning(ruleset.source_file, f"{ruleset.ref}, the released version in effect on {on}, was due "
                                                   f"for review by {due}: review it and release its successor")]
    return []
