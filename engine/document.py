"""YAML documents that remember where every value was written, and schema errors located in them."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

from .errors import RulesetError, RulesetErrors

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
# libyaml's parser when PyYAML was built with it: the same nodes and marks, several times faster.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Document:
    """Parsed YAML plus the (line, column) of every mapping key, list item and value."""

    file: str
    text: str
    data: object
    marks: dict[tuple, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path) -> tuple[int, int]:
        path = tuple(path)
        while path not in self.marks and path:
            path = path[:-1]
        return self.marks.get(path, (1, 1))

    def error(self, path, message: str) -> RulesetError:
        line, column = self.locate(path)
        return RulesetError(self.file, line, column, tuple(path), message)


def read_document(path: str | Path, text: str | None = None) -> Document:
    """Parse one YAML file; a syntax error or duplicate key raises RulesetErrors with its position."""
    name = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RulesetErrors([RulesetError(name, 0, 0, (), f"cannot read the file: {exc}")]) from None
    loader = _LOADER(text)
    doc = Document(name, text, None)
    errors: list[RulesetError] = []
    try:
        node = loader.get_single_node()
        if node is not None:  # marks first: constructing flattens merge keys (<<) into the nodes
            _record_marks(node, (), doc, errors)
        doc.data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = " ".join(p for p in (exc.context, exc.problem) if p)
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise RulesetErrors([RulesetError(name, line, column, (), f"YAML syntax error: {reason}")]) from None
    except yaml.YAMLError as exc:
        raise RulesetErrors([RulesetError(name, 0, 0, (), f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()
    if errors:
        raise RulesetErrors(errors)
    return doc


def _record_marks(node, path: tuple, doc: Document, errors: list) -> None:
    doc.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen and key != "<<":
                errors.append(RulesetError(doc.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                           path + (key,), f"the key '{key}' is written twice in this mapping"))
            seen.add(key)
            _record_marks(value_node, path + (key,), doc, errors)
            doc.marks[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_marks(item, path + (index,), doc, errors)


@lru_cache(maxsize=None)
def _schema_registry() -> Registry:
    """Every schema of ours by its $id, so one may $ref another."""
    resources = []
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        if "$id" in contents:
            resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources)


@lru_cache(maxsize=None)
def validator(schema_name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMA_DIR / schema_name).read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, registry=_schema_registry(), format_checker=cls.FORMAT_CHECKER)


def schema_errors(doc: Document, schema_name: str) -> list[RulesetError]:
    """Every schema violation, each reduced to its most relevant cause and said in plain words."""
    found = []
    for error in validator(schema_name).iter_errors(_jsonable(doc.data)):
        cause = best_match([error]) if error.context else error
        cause = _deepest(cause)
        found.append(doc.error(cause.absolute_path, plain_message(cause)))
    found.sort(key=lambda e: (e.line, e.column))
    return found


def _deepest(error):
    """For oneOf/anyOf, follow best_match into the branch that got furthest."""
    while error.context:
        # A branch that reports a missing required key is usually a different shape altogether;
        # the branch that got past its required keys says what is really wrong.
        shaped = [e for e in error.context if e.validator != "required"]
        error = best_match(shaped or error.context)
    return error


def _jsonable(data):
    """YAML dates become ISO strings so the JSON Schema sees what a JSON client would send."""
    if isinstance(data, dict):
        return {str(k): _jsonable(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_jsonable(v) for v in data]
    if hasattr(data, "isoformat"):
        return data.isoformat()
    return data


_TYPE_WORDS = {"number": "a number", "integer": "a whole number", "string": "text", "boolean": "true or false",
               "object": "a mapping (key: value pairs)", "array": "a list", "null": "nothing"}


def _describe(value) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, str):
        return f"the text '{value}'"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def plain_message(error) -> str:
    """One sentence a pharmacist can act on, from a jsonschema ValidationError."""
    kind, expected, value = error.validator, error.validator_value, error.instance
    if kind == "type":
        types = expected if isinstance(expected, list) else [expected]
        wanted = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
        return f"expected {wanted} here, found {_describe(value)}"
    if kind == "enum":
        return f"{_describe(value)} is not allowed here; use one of: " + ", ".join(map(str, expected))
    if kind == "required":
        missing = [k for k in expected if isinstance(value, dict) and k not in value]
        return "missing required key " + ", ".join(f"'{k}'" for k in missing)
    if kind == "additionalProperties":
        extra = [k for k in value if k not in error.schema.get("properties", {})]
        allowed = ", ".join(error.schema.get("properties", {}))
        hint = ("; a text with a comma inside {...} must be in quotes"
                if any(" " in str(k) for k in extra) else "")
        return (f"unknown key {', '.join(repr(k) for k in extra)}" + (f" (allowed here: {allowed})" if allowed else "")
                + hint)
    if kind == "pattern":
        return f"{_describe(value)} is not in the expected form" + _hint(error)
    if kind in ("minItems", "minProperties", "minLength"):
        return "must not be empty"
    if kind == "maxProperties" and isinstance(value, dict) and "fact" in value:
        return "a comparison takes exactly one operator: eq, ne, gt, gte, lt, lte or in"
    if kind == "minProperties" or (kind == "maxProperties"):
        return error.message
    return error.message


def _hint(error) -> str:
    description = error.schema.get("description")
    return f" ({description})" if description else ""
