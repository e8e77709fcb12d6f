"""Ruleset files -> validated model: YAML with line marks, then JSON Schema, then semantic checks.

Nothing is built from a document that failed the schema, and nothing leaves here that failed a check.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import checks
from .document import Document, read_document, schema_errors
from .errors import RulesetErrors
from .model import (
    AllOf,
    AnyOf,
    Band,
    Compare,
    Condition,
    DecisionTemplate,
    Derivation,
    Exists,
    FactRef,
    FactSpec,
    Literal,
    Missing,
    Not,
    Operand,
    Parameter,
    ParamRef,
    Rule,
    Ruleset,
    SuggestionTemplate,
    Table,
)

RULESET_SCHEMA = "ruleset.schema.json"
TESTS_SCHEMA = "ruleset-tests.schema.json"
TESTS_SUFFIX = ".tests.yaml"  # rules/<id>/<version>.tests.yaml: tests kept beside a version, outside its hash
SITE_DIR = "site"  # rules/site/ holds site mappings, not rulesets
SITE_MAPPING = Path(SITE_DIR) / "fhir-r4.yaml"  # a rules directory's site mapping
_VERSION_FILE = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?\.ya?ml$")


@dataclass(frozen=True)
class SiteFacts:
    """What the site mapping can supply: the facts (with types) and the medication concepts."""

    file: str
    fact_types: dict[str, str]
    medications: frozenset[str]


def load_site(path: str | Path) -> SiteFacts:
    from .fhir import load_site_mapping  # the mapping's own module reads it; its MappingError is a RulesetErrors

    mapping = load_site_mapping(path)
    return SiteFacts(str(path), dict(mapping.fact_types), frozenset(mapping.medications))


def find_site_mapping(start: Path) -> Path:
    """The site mapping of the rules directory `start` is in: the nearest site/fhir-r4.yaml at or above it."""
    for folder in [start, *start.parents]:
        if (folder / SITE_MAPPING).is_file():
            return folder / SITE_MAPPING
    raise OSError(f"no {SITE_MAPPING} found above {start}")


def site_for(start: Path) -> SiteFacts | None:
    """What the site mapping of the rules directory a ruleset file sits in supplies, if it has one."""
    try:
        return load_site(find_site_mapping(start))
    except OSError:
        return None


def load_ruleset(path: str | Path, text: str | None = None, site: SiteFacts | None = None) -> Ruleset:
    """Load one ruleset version; raises RulesetErrors listing every problem found.

    With `site`, input facts are also checked against what the site mapping produces."""
    doc = read_document(path, text)
    errors = schema_errors(doc, RULESET_SCHEMA)
    if errors:
        raise RulesetErrors(errors)
    ruleset = build_ruleset(doc)
    sibling_tests = _sibling_tests(Path(path))
    if sibling_tests is not None:
        tests_data = sibling_tests.data
        assert isinstance(tests_data, dict)  # it passed the tests schema, whose top is a mapping
        ruleset = dataclasses.replace(ruleset, tests=ruleset.tests + tuple(tests_data.get("tests", [])))
    errors = checks.check_ruleset(ruleset, doc, sibling_tests)
    if site is not None:
        errors += checks.check_against_mapping(ruleset, doc, site.fact_types, site.file, site.medications)
    if errors:
        raise RulesetErrors(errors)
    return ruleset


def _sibling_tests(path: Path) -> Document | None:
    """The version's sibling tests file, schema-checked, or None."""
    sibling = path.with_name(path.stem + TESTS_SUFFIX)
    if not sibling.is_file():
        return None
    doc = read_document(sibling)
    errors = schema_errors(doc, TESTS_SCHEMA)
    if errors:
        raise RulesetErrors(errors)
    return doc


def ruleset_files(paths: Iterable[str | Path]) -> list[Path]:
    """Ruleset version files named by paths (files, or directories searched below)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*.y*ml"))
                         if _VERSION_FILE.match(p.name) and SITE_DIR not in p.relative_to(path).parts[:-1])
        else:
            found.append(path)
    return found


# --- document -> model ----------------------------------------------------------------------


def build_ruleset(doc: Document) -> Ruleset:
    data = doc.data
    assert isinstance(data, dict)  # only a document that passed the ruleset schema is built, and its top is a mapping
    metadata = {k: data[k] for k in ("protocol", "citations", "authors", "hooks", "services", "topic_system",
                                      "medication", "override_reasons", "clauses", "evidence", "review_by",
                                      "therapy_start")
                if k in data}
    return Ruleset(
        id=data["id"],
        version=data["version"],
        title=data["title"],
        description=data["description"],
        metadata=metadata,
        parameters={name: Parameter(name, p["value"], p["unit"], p["description"], p["source"])
                    for name, p in data.get("parameters", {}).items()},
        facts={name: _fact(name, f) for name, f in data.get("facts", {}).items()},
        tables={name: _table(name, t, doc) for name, t in data.get("tables", {}).items()},
        rules=tuple(_rule(r, doc.locate(("rules", i))[0], data) for i, r in enumerate(data["rules"])),
        tests=tuple(data.get("tests", [])),
        source_file=doc.file,
        source_text=doc.text,
    )


def _fact(name: str, spec: dict[str, Any]) -> FactSpec:
    plausible = spec.get("plausible")
    max_age = spec.get("max_age_days")
    return FactSpec(name=name, type=spec["type"], description=spec["description"], unit=spec.get("unit", ""),
                    derived=spec.get("derived", False), observed_on=spec.get("observed_on"),
                    max_age_days=max_age["param"] if max_age else None,
                    plausible=tuple(plausible) if plausible else None)


def parse_interval(text: str) -> tuple[float | None, float | None, bool, bool]:
    """'(20, 200]' -> (20.0, 200.0, False, True); 'inf' ends are unbounded."""
    body = text.strip()
    low_text, high_text = (part.strip() for part in body[1:-1].split(","))
    low = None if low_text == "-inf" else float(low_text)
    high = None if high_text == "inf" else float(high_text)
    return low, high, body[0] == "[", body[-1] == "]"


def _table(name: str, spec: dict[str, Any], doc: Document) -> Table:
    bands: list[Band] = []
    for index, row in enumerate(spec["rows"]):
        low, high, low_closed, high_closed = parse_interval(row["band"])
        output = ParamRef(row["output"]["param"]) if isinstance(row["output"], dict) else row["output"]
        line = doc.locate(("tables", name, "rows", index))[0]
        bands.append(Band(low, high, low_closed, high_closed, output, row["band"], line))
    output_max = spec.get("output_max")
    return Table(name=name, description=spec["description"], input_unit=spec.get("input_unit", ""),
                 output_unit=spec.get("output_unit", ""), bands=tuple(bands), domain=parse_interval(spec["domain"]),
                 output_max=output_max["param"] if output_max else None,
                 line=doc.locate(("tables", name))[0])


def build_condition(spec: dict[str, Any]) -> Condition:
    if "all" in spec:
        return AllOf(tuple(build_condition(c) for c in spec["all"]))
    if "any" in spec:
        return AnyOf(tuple(build_condition(c) for c in spec["any"]))
    if "not" in spec:
        return Not(build_condition(spec["not"]))
    if "exists" in spec:
        return Exists(spec["exists"])
    if "missing" in spec:
        return Missing(spec["missing"])
    (op, operand), = ((k, v) for k, v in spec.items() if k != "fact")
    if op == "in":
        return Compare(spec["fact"], op, tuple(_operand(v) for v in operand))
    return Compare(spec["fact"], op, _operand(operand))


def _operand(value: object) -> Operand:
    if isinstance(value, dict):
        return ParamRef(value["param"]) if "param" in value else FactRef(value["fact"])
    return Literal(value)


def _derivation(fact: str, spec: object) -> Derivation:
    if isinstance(spec, dict):
        if "expr" in spec:
            return Derivation(fact, "expr", spec["expr"])
        if "table" in spec:
            return Derivation(fact, "table", (spec["table"], spec["input"]))
        if "param" in spec:
            return Derivation(fact, "param", spec["param"])
        return Derivation(fact, "fact", spec["fact"])
    return Derivation(fact, "value", spec)


def _decision(spec: dict[str, Any], data: dict[str, Any]) -> DecisionTemplate:
    suggestion = spec.get("suggestion")
    reasons = data.get("override_reasons", {}).get(spec.get("override_reasons"), [])
    return DecisionTemplate(
        topic=spec["topic"], indicator=spec["indicator"], summary=spec["summary"], detail=spec["detail"],
        suggestion=SuggestionTemplate(suggestion["action"], suggestion["label"], suggestion.get("dose"),
                                      suggestion.get("order")) if suggestion else None,
        override_reasons=tuple(reasons), links=tuple(spec.get("links", [])))


def _rule(spec: dict[str, Any], line: int, data: dict[str, Any]) -> Rule:
    then = spec["then"]
    return Rule(
        id=spec["id"], explanation=spec["explanation"].strip(), when=build_condition(spec["when"]),
        derive=tuple(_derivation(f, v) for f, v in then.get("derive", {}).items()),
        append=tuple(Derivation(f, "template", v) for f, v in then.get("append", {}).items()),
        decide=_decision(then["decide"], data) if "decide" in then else None,
        line=line, cites=tuple(spec.get("cites", ())))
