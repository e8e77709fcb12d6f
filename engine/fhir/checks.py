"""Cross-reference checks of a site mapping, after its schema: what JSON Schema cannot say.

Each check yields (path in the document, message), so the loader can point at the line; every problem is reported,
not only the first.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# A place in the mapping document: keys and list indexes from its root.
Path = tuple[str | int, ...]

# Prefetch keys for the non-Observation queries; observation concepts may not take these names.
RESERVED_PREFETCH_KEYS = ("patient", "conditions", "procedures", "medications")


_MEDICATION_FACT_TYPES = {
    "has_history": "boolean", "on_therapy": "boolean", "start_date": "date", "current_daily_dose": "number",
    "last_dose_change_date": "date", "active_order_id": "string", "has_draft_order": "boolean",
    "draft_order_id": "string", "draft_daily_dose": "number", "draft_frequency_per_day": "number",
    "current_status": "string"}
_DOSE_ROLES = ("current_daily_dose", "last_dose_change_date", "draft_daily_dose", "draft_frequency_per_day")
_CODED_FACT_TYPES = {"present": "boolean", "active": "boolean", "latest_onset": "date",
                     "count": "integer", "latest_date": "date"}


def declared_facts(data: dict[str, Any]) -> Iterator[tuple[Path, str, str]]:
    """Every fact the mapping declares: (path in the file, fact name, fact type)."""
    patient = data.get("patient", {})
    if "birth_date_fact" in patient:
        yield ("patient", "birth_date_fact"), patient["birth_date_fact"], "date"
    if "age_fact" in patient:
        yield ("patient", "age_fact"), patient["age_fact"], "integer"
    for name, spec in patient.get("attributes", {}).items():
        yield ("patient", "attributes", name, "fact"), spec["fact"], "boolean"
    for name, spec in data.get("observations", {}).items():
        yield ("observations", name, "value_fact"), spec["value_fact"], "integer" if "score" in spec else "number"
        yield ("observations", name, "date_fact"), spec["date_fact"], "date"
        if "uln" in spec:
            yield ("observations", name, "uln", "fact"), spec["uln"]["fact"], "number"
            yield ("observations", name, "uln", "source_fact"), spec["uln"]["source_fact"], "string"
    for section in ("conditions", "procedures"):
        for name, spec in data.get(section, {}).items():
            for role, fact in spec["facts"].items():
                yield (section, name, "facts", role), fact, _CODED_FACT_TYPES[role]
    for name, spec in data.get("medications", {}).items():
        for role, fact in spec["facts"].items():
            yield ("medications", name, "facts", role), fact, _MEDICATION_FACT_TYPES[role]


def semantic_problems(data: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    for check in (_check_systems, _check_units, _check_uln_references, _check_bands, _check_fact_names,
                  _check_prefetch_keys, _check_doses):
        yield from check(data)


def _check_systems(data: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    for name, spec in data["patient"].get("attributes", {}).items():
        for key in ("codes", "undecided"):
            for i, code_set in enumerate(spec.get(key, ())):
                if code_set["system"] not in data["systems"]:
                    yield (("patient", "attributes", name, key, i, "system"),
                           f"unknown code system '{code_set['system']}'; define it under `systems`")
    for section in ("observations", "conditions", "procedures", "medications"):
        for name, spec in data[section].items():
            for i, code_set in enumerate(spec.get("codes", ())):
                if code_set["system"] not in data["systems"]:
                    yield ((section, name, "codes", i, "system"),
                           f"unknown code system '{code_set['system']}'; define it under `systems`")
                if section == "observations" and code_set.get("prefix"):
                    yield ((section, name, "codes", i, "prefix"),
                           "observations cannot use prefix codes: a FHIR search cannot express them")
            for i, coding in enumerate(spec.get("order_coding", ())):
                if coding["system"] not in data["systems"]:
                    yield ((section, name, "order_coding", i, "system"),
                           f"unknown code system '{coding['system']}'; define it under `systems`")


def _check_units(data: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    for name, spec in data["observations"].items():
        if "unit" in spec:
            yield from _unit_problems(spec, ("observations", name))
    for name, spec in data["medications"].items():
        if "dose" in spec:
            yield from _unit_problems(spec["dose"], ("medications", name, "dose"))


def _unit_problems(spec: dict[str, Any], where: Path) -> Iterator[tuple[Path, str]]:
    """The canonical unit converts to itself by 1, and every alias names a listed unit."""
    if spec["conversions"].get(spec["unit"]) != 1:
        yield where + ("conversions",), f"the canonical unit '{spec['unit']}' must be listed with factor 1"
    for alias, target in spec.get("aliases", {}).items():
        if target not in spec["conversions"]:
            yield where + ("aliases", alias), f"alias target '{target}' is not listed in conversions"


def _check_uln_references(data: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    tables = data.get("uln_tables", {})
    for name, spec in data["observations"].items():
        uln = spec.get("uln", {})
        if "table" not in uln:
            continue
        where = ("observations", name, "uln")
        table = tables.get(uln["table"])
        if table is None:
            yield where + ("table",), f"unknown ULN table '{uln['table']}'; define it under `uln_tables`"
        elif uln["column"] not in table["columns"]:
            yield where + ("column",), f"table '{uln['table']}' has no column '{uln['column']}'"
        elif table["columns"][uln["column"]] != spec.get("unit"):
            yield (where + ("column",), f"column '{uln['column']}' is in {table['columns'][uln['column']]}, "
                                        f"but this observation's unit is {spec.get('unit')}")


def _check_bands(data: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    """Age bands must be in order with no gap or overlap, and give a number for every column."""
    for name, table in data.get("uln_tables", {}).items():
        previous_end = None
        for i, band in enumerate(table["bands"]):
            where = ("uln_tables", name, "bands", i)
            if band["from"] >= band["to"]:
                yield where + ("to",), f"'to' ({band['to']}) must be greater than 'from' ({band['from']})"
            if previous_end is not None and band["from"] != previous_end:
                yield where + ("from",), f"this band starts at {band['from']}, the previous one ends at {previous_end}"
            previous_end = band["to"]
            for column in table["columns"]:
                if column not in band:
                    yield where, f"no value for column '{column}'"
            for key in band:
                if key not in table["columns"] and key not in ("from", "to", "label"):
                    yield where + (key,), f"'{key}' is not a column of this table"


def _check_fact_names(data: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    seen: dict[str, Path] = {}
    for where, name, _ in declared_facts(data):
        if name in seen:
            first = ".".join(map(str, seen[name]))
            yield where, f"fact '{name}' is already produced at {first}"
        seen.setdefault(name, where)


def _check_prefetch_keys(data: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    for name in data["observations"]:
        if name in RESERVED_PREFETCH_KEYS:
            yield ("observations", name), f"'{name}' is a reserved prefetch key; choose another concept name"


def _check_doses(data: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    for name, spec in data["medications"].items():
        for role in _DOSE_ROLES:
            if role in spec["facts"] and "dose" not in spec:
                yield ("medications", name, "facts", role), f"'{role}' needs a `dose` section with units"
