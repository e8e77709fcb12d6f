"""Reading a site mapping: YAML with line marks, its schema, the cross-reference checks, then the frozen model.

Nothing is built from a mapping that failed a check, so extraction can trust every reference in it.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from .. import units
from ..document import read_document, schema_errors
from ..errors import RulesetError, RulesetErrors
from .checks import declared_facts, semantic_problems
from .mapping import (
    AgeBand,
    CodedConcept,
    CodeIndex,
    MedicationConcept,
    ObservationConcept,
    PatientAttribute,
    Score,
    SiteMapping,
    UlnSpec,
    _normalise,
)

SCHEMA = "site-mapping.schema.json"

K = TypeVar("K")
V = TypeVar("V")


class MappingError(RulesetErrors):
    """The site mapping cannot be used. Every problem is in `errors`; the first (by position) is the headline:
    its file, line, column, path and message are this error's own, and its text is this error's text."""

    def __init__(self, errors: list[RulesetError]) -> None:
        super().__init__(list(errors))
        first = self.errors[0]
        self.file, self.line, self.column, self.message = first.file, first.line, first.column, first.message
        self.path = list(first.path)

    def __str__(self) -> str:
        return str(self.errors[0])


def load_site_mapping(path: str | Path) -> SiteMapping:
    """Read, validate (schema, then cross-references) and index a site mapping; MappingError says where it is wrong."""
    try:
        doc = read_document(path)
    except RulesetErrors as exc:
        raise MappingError(exc.errors) from None
    errors = schema_errors(doc, SCHEMA)
    if errors:
        raise MappingError(errors)
    assert isinstance(doc.data, dict)  # the schema passed, and it requires an object at the root
    errors = sorted((doc.error(where, message) for where, message in semantic_problems(doc.data)),
                    key=lambda e: (e.line, e.column))
    if errors:
        raise MappingError(errors)
    return _build(doc.file, doc.data)


def _build(file: str, data: dict[str, Any]) -> SiteMapping:
    systems = data["systems"]
    observations = data["observations"]
    conditions = data["conditions"]
    procedures = data["procedures"]
    medications = data["medications"]
    tables = data.get("uln_tables", {})
    return SiteMapping(
        file=file,
        history_limit=data["history_limit"],
        birth_date_fact=data["patient"].get("birth_date_fact"),
        age_fact=data["patient"].get("age_fact"),
        age_units=_frozen(data.get("age_units", {})),
        attributes=_frozen({name: _attribute(name, spec, systems)
                            for name, spec in data["patient"].get("attributes", {}).items()}),
        ignored_statuses=frozenset(data["observation_rules"].get("ignored_statuses", [])),
        range_types=frozenset(data["observation_rules"].get("reference_range_types", [])),
        observations=_frozen({name: _observation(name, spec, tables, data["observation_rules"]["statuses"])
                              for name, spec in observations.items()}),
        observation_codes=_code_index(systems, observations),
        observation_search=_frozen({name: _search_tokens(systems, spec) for name, spec in observations.items()}),
        excluded_verification=frozenset(data["condition_rules"]["excluded_verification"]),
        active_clinical=frozenset(data["condition_rules"]["active_clinical"]),
        missing_clinical_status_is_active=data["condition_rules"].get("missing_clinical_status_is_active", False),
        conditions=_frozen({name: CodedConcept(name, _frozen(spec["facts"])) for name, spec in conditions.items()}),
        condition_codes=_code_index(systems, conditions),
        procedure_statuses=frozenset(data["procedure_rules"]["statuses"]),
        procedures=_frozen({name: CodedConcept(name, _frozen(spec["facts"])) for name, spec in procedures.items()}),
        procedure_codes=_code_index(systems, procedures),
        history_statuses=frozenset(data["medication_rules"]["history_statuses"]),
        current_statuses=frozenset(data["medication_rules"]["current_statuses"]),
        periods_per_day=_frozen(data["medication_rules"]["periods_per_day"]),
        medications=_frozen({name: _medication(name, spec, systems) for name, spec in medications.items()}),
        medication_codes=_code_index(systems, {n: s for n, s in medications.items() if "codes" in s}),
        fact_types=_frozen({name: kind for _, name, kind in declared_facts(data)}),
    )


def _frozen(mapping: Mapping[K, V]) -> Mapping[K, V]:
    return MappingProxyType(dict(mapping))


def _observation(name: str, spec: dict[str, Any], tables: dict[str, Any], statuses: list[str]) -> ObservationConcept:
    table = (units.unit_table(spec["unit"], spec["conversions"], spec.get("aliases"))
             if "unit" in spec else None)
    score = spec.get("score")
    return ObservationConcept(
        name=name, value_fact=spec["value_fact"], date_fact=spec["date_fact"], units=table,
        score=Score(score["min"], score["max"], _frozen(score.get("answers", {}))) if score else None,
        uln=_uln(spec["uln"], tables) if "uln" in spec else None,
        statuses=frozenset(spec.get("statuses", statuses)))


def _uln(spec: dict[str, Any], tables: dict[str, Any]) -> UlnSpec:
    table = tables.get(spec["table"], {}) if "table" in spec else {}
    bands = tuple(_band(band, table["columns"]) for band in table.get("bands", ()))
    return UlnSpec(spec["fact"], spec["source_fact"], spec.get("table"), spec.get("column"), bands)


def _band(band: dict[str, Any], columns: Mapping[str, str]) -> AgeBand:
    low, high = band["from"], band["to"]
    label = band.get("label") or (f"age {low}" if high - low == 1 else f"ages {low}-{high - 1}")
    return AgeBand(low, high, label, _frozen({column: float(band[column]) for column in columns}))


def _attribute(name: str, spec: dict[str, Any], systems: dict[str, Any]) -> PatientAttribute:
    return PatientAttribute(name, spec["fact"], spec["extension"], tuple(spec["parts"]),
                            _code_index(systems, {name: {"codes": spec["codes"]}}),
                            _code_index(systems, {name: {"codes": spec.get("undecided", [])}}))


def _medication(name: str, spec: dict[str, Any], systems: dict[str, Any]) -> MedicationConcept:
    dose = spec.get("dose")
    table = units.unit_table(dose["unit"], dose["conversions"], dose.get("aliases")) if dose else None
    patterns = tuple(p.casefold() for p in spec.get("name_patterns", ()))
    coding = tuple(_frozen({**c, "system": systems[c["system"]]["uris"][0]}) for c in spec.get("order_coding", ()))
    return MedicationConcept(name, patterns, table, _frozen(spec["facts"]), coding)


def _code_index(systems: dict[str, Any], concepts: Mapping[str, dict[str, Any]]) -> CodeIndex:
    """One index per resource kind: (system URI, normalised code) -> the concepts it belongs to."""
    options = {uri: (bool(s.get("ignore_dots")), bool(s.get("ignore_case")))
               for s in systems.values() for uri in s["uris"]}
    exact: dict[tuple[str, str], list[str]] = defaultdict(list)
    prefixes: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, spec in concepts.items():
        for code_set in spec["codes"]:
            target = prefixes if code_set.get("prefix") else exact
            for uri in systems[code_set["system"]]["uris"]:
                for code in code_set["codes"]:
                    key = (uri, _normalise(code, *options[uri]))
                    if name not in target[key]:
                        target[key].append(name)
    longest = max((len(code) for _, code in prefixes), default=0)
    return CodeIndex(_frozen(options), _frozen({k: tuple(v) for k, v in exact.items()}),
                     _frozen({k: tuple(v) for k, v in prefixes.items()}), longest)


def _search_tokens(systems: dict[str, Any], spec: dict[str, Any]) -> tuple[str, ...]:
    return tuple(f"{uri}|{code}" for code_set in spec["codes"]
                 for uri in systems[code_set["system"]]["uris"] for code in code_set["codes"])
