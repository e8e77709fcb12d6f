"""The next version of an amendment, by semantic versioning, from what it changes (engine/diff.py).

- major: a contract change: a fact, parameter, decision topic or service (hook) that callers and reports name is
  removed or renamed, or the ruleset's id changes;
- minor: a change of behaviour: a parameter's value or unit, a table's rows, a rule's conditions or conclusions,
  a fact's type, what is added;
- patch: text only: descriptions, card wording, explanations, sources, comments.

The proposal is one step above the base version at that level, and above every released version (a release must
be greater than all of them), skipping versions already taken; the reason names the changes that decided it.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .diff import Change, document_changes
from .versions import version_key

LEVELS = ("patch", "minor", "major")
# Words for people, not for the engine: a change of these alone changes no decision.
TEXT_KEYS = frozenset({"description", "explanation", "summary", "detail", "label", "note", "title", "source",
                       "citations", "protocol"})


@dataclass(frozen=True)
class Proposal:
    version: str
    level: str  # patch | minor | major
    reason: str
    changes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "level": self.level, "reason": self.reason, "changes": self.changes}


def propose_version(base_version: str, old: dict[str, Any], new: dict[str, Any],
                    taken: Iterable[str] = (), released: Iterable[str] = ()) -> Proposal:
    """The version for `new`, an amendment of `old` (base_version); `taken`: versions that exist already,
    `released`: those released (the proposal is greater than each)."""
    changes = document_changes(old, new)
    graded = [(_level(change, old, new), change) for change in changes]
    graded += [("major", Change("topic", topic, "removed", f"decision topic {topic} removed"))
               for topic in sorted(_topics(old) - _topics(new))]
    graded += [("major", Change("metadata", "hooks", "removed", f"hook {hook} removed: its service is gone"))
               for hook in sorted(set(old.get("hooks") or []) - set(new.get("hooks") or []))]
    if old.get("id") != new.get("id"):
        graded.append(("major", Change("metadata", "id", "changed", f"ruleset id {old.get('id')} -> {new.get('id')}")))
    level = max((g for g, _ in graded), key=LEVELS.index, default="patch")
    deciding = [c.text for g, c in graded if g == level]
    reason = (f"{level}: " + "; ".join(deciding)) if deciding else \
        "patch: no structural change (comments or layout only)"
    version = _next(base_version, level, set(taken), list(released))
    return Proposal(version, level, reason, [c.text for _, c in graded])


def _level(change: Change, old: dict[str, Any], new: dict[str, Any]) -> str:
    if change.change == "removed" and change.kind in ("fact", "parameter"):
        return "major"
    if change.kind == "metadata":
        return _metadata_level(change.name)
    if change.change != "changed":
        return "minor"
    section = {"parameter": "parameters", "table": "tables", "fact": "facts"}.get(change.kind)
    if section is not None:
        before, after = (doc.get(section, {}).get(change.name) for doc in (old, new))
    else:
        before, after = (next((r for r in doc.get("rules", []) if r.get("id") == change.name), None)
                         for doc in (old, new))
    return "patch" if _without_text(before) == _without_text(after) else "minor"


def _metadata_level(key: str) -> str:
    return "patch" if key in TEXT_KEYS else "minor"  # a hook gone is graded on its own, as a contract change


def _without_text(value: Any) -> Any:
    """The value with every wording key taken out, at any depth: what the engine decides by."""
    if isinstance(value, dict):
        return {k: _without_text(v) for k, v in value.items() if k not in TEXT_KEYS}
    if isinstance(value, list):
        return [_without_text(v) for v in value]
    return value


def _topics(doc: dict[str, Any]) -> set[str]:
    """The decision topics the cards carry (EHRs and the outcome reports count cards by them)."""
    found = set()
    for rule in doc.get("rules") or []:
        decide = ((rule or {}).get("then") or {}).get("decide") if isinstance(rule, dict) else None
        if isinstance(decide, dict) and decide.get("topic"):
            found.add(str(decide["topic"]))
    return found


def bump(version: str, level: str) -> str:
    major, minor, patch = version_key(version)[:3]
    if level == "major":
        return f"{major + 1}.0.0"
    if level == "minor":
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def _next(base: str, level: str, taken: set[str], released: list[str]) -> str:
    start = max([base, *released], key=version_key)
    candidate = bump(start, level)
    while candidate in taken:
        candidate = bump(candidate, level)
    return candidate
