"""The loaded site mapping: concepts, code indexes and unit tables, pre-indexed for extraction; and what
extraction returns.

Everything here is frozen: one mapping serves every request and every thread of a process.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import units
from ..uncertain import Possible


@dataclass(frozen=True)
class CodeIndex:
    """Codings -> concept names, indexed at load so matching a coding is a few dictionary lookups."""

    systems: Mapping[str, tuple[bool, bool]]  # system URI -> (ignore_dots, ignore_case)
    exact: Mapping[tuple[str, str], tuple[str, ...]]  # (URI, normalised code) -> concepts
    prefixes: Mapping[tuple[str, str], tuple[str, ...]]
    longest_prefix: int

    def match(self, concept: Any) -> dict[str, str]:
        """Concept name -> the code (as written) that matched, over every coding of a CodeableConcept."""
        # Called for every coded resource of every request, so the codings are walked in place, in the order
        # `_codings` yields them and with the same tolerance (an object alone where an array belongs counts as one),
        # without a generator or a list per level, and with the index read through locals.
        found: dict[str, str] = {}
        systems, exact, prefixes, longest = self.systems, self.exact, self.prefixes, self.longest_prefix
        for item in concept if isinstance(concept, list) else (concept,):
            codings = item.get("coding") if isinstance(item, dict) else None
            for coding in codings if isinstance(codings, list) else (codings,):
                if not isinstance(coding, dict):
                    continue
                system, code = coding.get("system"), coding.get("code")
                if not isinstance(system, str) or not isinstance(code, str) or system not in systems:
                    continue
                key = _normalise(code, *systems[system])
                for name in exact.get((system, key), ()):
                    found.setdefault(name, code)
                for length in range(1, min(len(key), longest) + 1):
                    for name in prefixes.get((system, key[:length]), ()):
                        found.setdefault(name, code)
        return found


@dataclass(frozen=True)
class Score:
    low: int
    high: int
    answers: Mapping[str, int]  # answer code -> score


@dataclass(frozen=True)
class AgeBand:
    low: int  # completed years, inclusive
    high: int  # completed years, exclusive
    label: str
    values: Mapping[str, float]  # column -> ULN


@dataclass(frozen=True)
class UlnSpec:
    fact: str
    source_fact: str
    table: str | None
    column: str | None
    bands: tuple[AgeBand, ...]


@dataclass(frozen=True)
class ObservationConcept:
    name: str
    value_fact: str
    date_fact: str
    units: units.UnitTable | None  # None for a score
    score: Score | None
    uln: UlnSpec | None
    statuses: frozenset[str]  # result statuses its decisions may use


@dataclass(frozen=True)
class CodedConcept:
    """A condition or procedure concept: its facts by role (present, active, latest_onset, count, latest_date)."""

    name: str
    facts: Mapping[str, str]


@dataclass(frozen=True)
class PatientAttribute:
    """A boolean fact from a coded extension of Patient, e.g. an ancestry from the US Core race extension."""

    name: str
    fact: str
    extension: str  # its url
    parts: tuple[str, ...]  # sub-extension urls with a valueCoding, most specific first
    codes: CodeIndex  # what makes the fact true
    undecided: CodeIndex  # what leaves it undecided: the fact is missing


@dataclass(frozen=True)
class MedicationConcept:
    name: str
    patterns: tuple[str, ...]  # casefolded
    dose: units.UnitTable | None
    facts: Mapping[str, str]
    order_coding: tuple[Mapping[str, str], ...] = ()  # FHIR Codings for suggested orders (system as a URI)


@dataclass(frozen=True, repr=False)
class SiteMapping:
    """A validated site mapping, pre-indexed for extraction."""

    file: str
    history_limit: int
    birth_date_fact: str | None
    age_fact: str | None
    age_units: Mapping[str, str]
    attributes: Mapping[str, PatientAttribute]
    ignored_statuses: frozenset[str]  # results as if they did not exist (entered-in-error, cancelled)
    range_types: frozenset[str]
    observations: Mapping[str, ObservationConcept]
    observation_codes: CodeIndex
    observation_search: Mapping[str, tuple[str, ...]]  # concept -> "system|code" tokens for prefetch
    excluded_verification: frozenset[str]
    active_clinical: frozenset[str]
    missing_clinical_status_is_active: bool
    conditions: Mapping[str, CodedConcept]
    condition_codes: CodeIndex
    procedure_statuses: frozenset[str]
    procedures: Mapping[str, CodedConcept]
    procedure_codes: CodeIndex
    history_statuses: frozenset[str]
    current_statuses: frozenset[str]
    periods_per_day: Mapping[str, float]
    medications: Mapping[str, MedicationConcept]
    medication_codes: CodeIndex
    fact_types: Mapping[str, str]  # every fact this mapping can produce -> number|integer|boolean|string|date

    def __repr__(self) -> str:
        return f"SiteMapping({self.file!r}, {len(self.fact_types)} facts)"


@dataclass
class Extraction:
    """Facts for the ruleset, where each came from, and why an expected fact is missing although data existed."""

    facts: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    possible: dict[str, Possible] = field(default_factory=dict)  # facts the record gives only within bounds


def _normalise(code: str, ignore_dots: bool, ignore_case: bool) -> str:
    code = code.strip()
    if ignore_dots:
        code = code.replace(".", "")
    return code.upper() if ignore_case else code
