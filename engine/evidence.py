"""What a ruleset says of its own sources: the protocol clauses its rules cite, the source attributes of the
intervention (the names ONC HTI-1, 45 CFR 170.315(b)(11), gives them) and the date by which it must be reviewed.

All of it is optional in the language: versions released before it existed have none, and their files never change.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from .model import Rule, Ruleset

# The source attributes, in the order HTI-1 lists them, with the words a reader sees.
EVIDENCE_ATTRIBUTES = (
    ("bibliographic_citation", "Bibliographic citation"),
    ("developer", "Developer"),
    ("funding_source", "Funding source"),
    ("release_date", "Release date"),
    ("revision_date", "Revision date"),
    ("patient_demographics", "Patient demographic data used"),
)


@dataclass(frozen=True)
class Clause:
    """One clause of the source protocol: its own words (or a paraphrase, said to be one) and where it is written."""

    id: str
    title: str
    text: str
    quoted: bool  # the source's words; False: a paraphrase
    location: str


def clauses(ruleset: Ruleset) -> dict[str, Clause]:
    return {clause_id: Clause(clause_id, spec["title"], spec.get("quote") or spec["paraphrase"], "quote" in spec,
                              spec["location"])
            for clause_id, spec in (ruleset.metadata.get("clauses") or {}).items()}


def cited_clauses(rule: Rule, ruleset: Ruleset) -> list[Clause]:
    """The clauses a rule cites, in its order; an unknown id (the checker refuses one) is skipped."""
    known = clauses(ruleset)
    return [known[c] for c in rule.cites if c in known]


def uncited_rules(ruleset: Ruleset) -> list[Rule]:
    """Rules that cite no clause: plumbing that derives facts for others, or rules still to be traced to the source."""
    return [rule for rule in ruleset.rules if not rule.cites]


def evidence(ruleset: Ruleset) -> dict[str, Any]:
    """The source attributes as written, dates as ISO text."""
    written = ruleset.metadata.get("evidence") or {}
    return {key: _text(written[key]) for key, _ in EVIDENCE_ATTRIBUTES if key in written}


def labelled_evidence(ruleset: Ruleset) -> list[tuple[str, Any]]:
    """(attribute as a reader says it, value) of what the version states, in HTI-1's order."""
    written = evidence(ruleset)
    return [(label, written[key]) for key, label in EVIDENCE_ATTRIBUTES if key in written]


def review_by(ruleset: Ruleset) -> dt.date | None:
    value = ruleset.metadata.get("review_by")
    if value is None:
        return None
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def source_attributes(ruleset: Ruleset) -> dict[str, Any]:
    """The attributes for a CDS Hooks client (camelCase, as CDS Hooks writes its members): which version, its
    review-by date and its evidence; an attribute the version does not state is left out, never guessed."""
    written = evidence(ruleset)
    found: dict[str, Any] = {"ruleset": ruleset.id, "version": ruleset.version}
    reviewed = review_by(ruleset)
    if reviewed:
        found["reviewBy"] = reviewed.isoformat()
    found.update({_camel(key): written[key] for key, _ in EVIDENCE_ATTRIBUTES if key in written})
    return found


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def _text(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value
