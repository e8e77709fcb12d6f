"""Which released version decides a call, and why.

The version in effect on the call's date decides, unless its release applies to new therapies only
(`applies_to: new-therapies` in releases.yaml) and the patient's therapy started before its effective date: a
patient already on therapy keeps the versions that applied to it before: the latest release in effect that took
effect earlier and applies to this therapy (one for all patients, such as a correction released since the start,
or one for new therapies that took effect by the start), by the same rule again for that version. The start date
is the fact the version names in `therapy_start`, read from the facts the site mapping extracted for the call
(extraction does not depend on the version, so choosing reads nothing more). A therapy whose start is not on
record (no order yet: a draft being entered) is a new therapy.

The reason is said on every card and kept in the audit, and a replay chooses again from what was recorded.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .certainty import Evaluator
from .decide import decide
from .fhir import Extraction
from .model import Evaluation, Ruleset
from .versions import APPLIES_TO_NEW_THERAPIES, Release, RulesetVersions, version_key


@dataclass(frozen=True)
class VersionChoice:
    """The version that decides, why it was chosen, and the therapy start dates read to choose it."""

    ruleset: Ruleset
    reason: str  # e.g. "in effect on 2027-02-01"
    in_effect: str  # the version in effect on the date, which `ruleset` replaces when it is an earlier one
    therapy_start: dict[str, str] = field(default_factory=dict)  # fact -> YYYY-MM-DD, for each version asked

    def as_dict(self) -> dict[str, Any]:
        """What the audit keeps: enough to choose again on replay."""
        return {"version": self.ruleset.version, "reason": self.reason, "in_effect": self.in_effect,
                "therapy_start": dict(self.therapy_start)}


def decide_in_effect(engine: Evaluator, versions: RulesetVersions, facts: Extraction, on: dt.date,
                     hook: str | None) -> tuple[VersionChoice, Evaluation] | None:
    """The released version that decides on `on` for a patient with these facts, and its decisions; None when no
    version is in effect. The service and the audit replay decide through here."""
    choice = choose_version(versions, on, facts)
    if choice is None:
        return None
    return choice, decide(engine, choice.ruleset, facts, on, hook)


def choose_version(versions: RulesetVersions, on: dt.date, facts: Extraction) -> VersionChoice | None:
    """The version that decides on `on` for a patient with these facts; None when no version is in effect."""
    current = versions.select(on)
    if current is None:
        return None
    release = versions.releases[current.version]
    reason = f"in effect on {on.isoformat()}"
    if release.applies_to != APPLIES_TO_NEW_THERAPIES:
        return VersionChoice(current, reason, current.version)  # the common case: nothing to read
    read: dict[str, str] = {}
    in_effect, said = current.version, ""
    while release.applies_to == APPLIES_TO_NEW_THERAPIES:
        fact = current.therapy_start
        start = started_on(current, facts.facts)
        if fact is None or start is None:  # fact is never None for a release that applies to new therapies
            problem = facts.problems.get(fact or "")
            said = ("it applies to new therapies only and no therapy start date"
                    + (f" (`{fact}`: {problem})" if problem else f" (`{fact}`) is on record") + ": a new therapy")
            break
        read[fact] = start.isoformat()
        if start >= release.effective_from:
            said = (f"it applies to new therapies only; the therapy started {start.isoformat()}, on or after its "
                    f"effective date {release.effective_from.isoformat()}")
            break
        earlier = _version_for_therapy(versions, on, start, release)
        if earlier is None:
            said = (f"it applies to new therapies only; the therapy started {start.isoformat()}, before its effective "
                    f"date {release.effective_from.isoformat()}, but no earlier version was in effect for it")
            break
        reason = (f"therapy started {start.isoformat()}, before {current.version}'s effective date "
                  f"{release.effective_from.isoformat()}, which applies to new therapies only")
        current, release, said = versions.rulesets[earlier.version], earlier, ""
    if said and current.version == in_effect:  # the version in effect decides: say why it applies to this therapy
        reason += f" ({said})"
    return VersionChoice(current, reason, in_effect, read)


def started_on(ruleset: Ruleset, facts: Mapping[str, Any]) -> dt.date | None:
    """The therapy's start date as the ruleset reads it (its `therapy_start` fact), or None when unknown."""
    value = facts.get(ruleset.therapy_start) if ruleset.therapy_start else None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10]) if isinstance(value, str) else None
    except ValueError:
        return None


def _version_for_therapy(versions: RulesetVersions, on: dt.date, start: dt.date, later: Release) -> Release | None:
    """The version that decides on `on` for a therapy started on `start`, which `later` does not apply to: the
    latest of those in effect on `on` that took effect before `later` and apply to this therapy (to all patients,
    or to new therapies from on or before its start), so a correction released for all since the start applies to
    it too. If none does (the versions for it were retired, or the therapy began before any release and only
    releases for new therapies followed), the first to take effect after the start, before `later` did."""
    fitting = [r for r in versions.releases.values()
               if r.in_effect(on) and r.effective_from < later.effective_from
               and (r.applies_to != APPLIES_TO_NEW_THERAPIES or r.effective_from <= start)]
    if fitting:
        return max(fitting, key=lambda r: (r.effective_from, version_key(r.version)))
    after = [r for r in versions.releases.values() if start < r.effective_from < later.effective_from]
    if not after:
        return None
    first = min(r.effective_from for r in after)
    return max((r for r in after if r.effective_from == first), key=lambda r: version_key(r.version))
