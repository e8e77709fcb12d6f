"""YAML documents that remember where every value was written, and schema errors located in them."""
from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, Event, NodeEvent

import schemas

from .errors import RulesetError, RulesetErrors

# libyaml's parser when PyYAML was built with it: the same nodes and marks, several times faster.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# What a document may hold, checked before anything walks it (the shipped rulesets: 64 KB, 11 levels, 52 aliases,
# 6,000 values). Aliases are kept, since test cases share their facts with them (`<<: *eligible_20kg`), but an
# alias stands for a whole copy of what it names, so the values are counted as if every alias were expanded.
MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_NESTING = 32  # levels of mappings and lists
MAX_ALIASES = 200
MAX_VALUES = 200_000  # scalars, mappings and lists, each alias counted as what it names


@dataclass
class Document:
    """Parsed YAML plus the (line, column) of every mapping key, list item and value."""

    file: str
    text: str
    data: object
    marks: dict[tuple[str | int, ...], tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Iterable[str | int]) -> tuple[int, int]:
        key = tuple(path)
        while key not in self.marks and key:
            key = key[:-1]
        return self.marks.get(key, (1, 1))

    def error(self, path: Iterable[str | int], message: str) -> RulesetError:
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
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_DOCUMENT_BYTES:
        raise RulesetErrors([RulesetError(name, 0, 0, (), f"the document is {size:,} bytes; at most "
                                                        f"{MAX_DOCUMENT_BYTES:,} are read")])
    loader = _LOADER(text)
    doc = Document(name, text, None)
    errors: list[RulesetError] = []
    try:
        _screen(text, name)
        node = loader.get_single_node()
        if node is not None:  # marks first: constructing flattens merge keys (<<) into the nodes
            _record_marks(node, (), doc, errors, set())
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


def plain_data(text: str) -> Any:
    """What yaml.safe_load makes of the text, parsed by libyaml where PyYAML has it (several times faster)."""
    return yaml.load(text, Loader=_LOADER)


def _screen(text: str, name: str) -> None:
    """Refuse, at its line, a document nested too deep or whose aliases stand for too much (a "billion laughs"
    is a few hundred bytes): one pass over the parser's events, before any node is built."""
    loader = _LOADER(text)
    try:
        values, aliases = 0, 0
        named: dict[str | None, int] = {}  # anchor -> how many values it stands for
        open_collections: list[tuple[str | None, int]] = []  # anchor, values counted before it began
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise _refused(name, event, f"more than {MAX_ALIASES} aliases (*name) in one document")
                if any(anchor == event.anchor for anchor, _ in open_collections):
                    raise _refused(name, event, f"the alias *{event.anchor} is inside what it names")
                values += named.get(event.anchor, 1)  # an unknown anchor is reported when the nodes are built
            elif isinstance(event, NodeEvent):
                values += 1
                if isinstance(event, CollectionStartEvent):
                    open_collections.append((event.anchor, values - 1))
                    if len(open_collections) > MAX_NESTING:
                        raise _refused(name, event, f"lists and mappings nest deeper than {MAX_NESTING} levels")
                elif event.anchor:
                    named[event.anchor] = 1
            elif isinstance(event, CollectionEndEvent):
                anchor, before = open_collections.pop()
                if anchor:
                    named[anchor] = values - before
            if values > MAX_VALUES:
                raise _refused(name, event, f"the document holds more than {MAX_VALUES:,} values here, "
                                            "counting each alias as a copy of what it names")
    finally:
        loader.dispose()


def _refused(name: str, event: Event, reason: str) -> RulesetErrors:
    mark = event.start_mark
    assert mark is not None  # the parser marks every event it reads
    return RulesetErrors([RulesetError(name, mark.line + 1, mark.column + 1, (), reason)])


def _record_marks(node: yaml.Node, path: tuple[str | int, ...], doc: Document, errors: list[RulesetError],
                  walked: set[int]) -> None:
    """Marks of every key and value. What aliases share is walked once, so a path inside an alias is located at
    the alias's key, or else at what the alias names."""
    doc.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.CollectionNode):
        if id(node) in walked:
            return
        walked.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen and key != "<<":
                errors.append(RulesetError(doc.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                           path + (key,), f"the key '{key}' is written twice in this mapping"))
            seen.add(key)
            _record_marks(value_node, path + (key,), doc, errors, walked)
            doc.marks[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_marks(item, path + (index,), doc, errors, walked)


@cache
def _schema_registry() -> Registry:
    """Every schema of ours by its $id, so one may $ref another."""
    resources = []
    for name in schemas.names():
        contents = schemas.load(name)
        if "$id" in contents:
            resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources)


@cache
def validator(schema_name: str) -> jsonschema.protocols.Validator:
    schema = schemas.load(schema_name)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, registry=_schema_registry(), format_checker=cls.FORMAT_CHECKER)


# Texts that passed a schema in this process, by (schema, sha256 of the text). A document's data is parsed from its
# text alone and a schema is loaded once (validator), so a text that passed passes again; and every app start,
# workbench page and catalog load validates the same few files again, at tens of milliseconds each. gunicorn
# workers inherit what the master validated. Only passes are kept: errors name the file, and are rare.
_PASSED: dict[tuple[str, bytes], None] = {}
_PASSED_LIMIT = 4096  # entries of a few dozen bytes; past it the oldest are forgotten
_PASSED_LOCK = threading.Lock()  # a worker's threads may validate at once


def schema_errors(doc: Document, schema_name: str) -> list[RulesetError]:
    """Every schema violation, each reduced to its most relevant cause and said in plain words."""
    key = (schema_name, hashlib.sha256(doc.text.encode("utf-8", "surrogatepass")).digest())
    if key in _PASSED:
        return []
    found = _violations(doc, schema_name)
    if not found:
        with _PASSED_LOCK:
            _PASSED[key] = None
            while len(_PASSED) > _PASSED_LIMIT:
                del _PASSED[next(iter(_PASSED))]
    return found


def _violations(doc: Document, schema_name: str) -> list[RulesetError]:
    found: list[RulesetError] = []
    for error in validator(schema_name).iter_errors(_jsonable(doc.data)):
        cause = best_match([error]) if error.context else error
        cause = _deepest(cause)
        found.append(doc.error(cause.absolute_path, plain_message(cause)))
    found.sort(key=lambda e: (e.line, e.column))
    return found


def _deepest(error: ValidationError) -> ValidationError:
    """For oneOf/anyOf, follow best_match into the branch that got furthest."""
    while error.context:
        # A branch that reports a missing required key is usually a different shape altogether;
        # the branch that got past its required keys says what is really wrong.
        shaped = [e for e in error.context if e.validator != "required"]
        error = best_match(shaped or error.context)
    return error


def _jsonable(data: object, done: dict[int, object] | None = None) -> object:
    """YAML dates become ISO strings so the JSON Schema sees what a JSON client would send. What aliases share is
    converted once (`done`: id of a mapping or list -> its conversion)."""
    done = {} if done is None else done
    if isinstance(data, (dict, list)) and id(data) in done:
        return done[id(data)]
    if isinstance(data, dict):
        mapping = done[id(data)] = {str(k): _jsonable(v, done) for k, v in data.items()}
        return mapping
    if isinstance(data, list):
        items = done[id(data)] = [_jsonable(v, done) for v in data]
        return items
    if hasattr(data, "isoformat"):
        return data.isoformat()
    return data


_TYPE_WORDS = {"number": "a number", "integer": "a whole number", "string": "text", "boolean": "true or false",
               "object": "a mapping (key: value pairs)", "array": "a list", "null": "nothing"}


def _describe(value: object) -> str:
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


def plain_message(error: ValidationError) -> str:
    """One sentence a pharmacist can act on, from a jsonschema ValidationError."""
    kind, expected, value = error.validator, error.validator_value, error.instance
    if kind == "type":
        types: list[str] = expected if isinstance(expected, list) else [expected]
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
    if kind == "maxItems":
        return f"at most {expected:,} items are allowed here; this list has {len(value):,}"
    if kind == "maxProperties" and isinstance(value, dict) and "fact" in value:
        return "a comparison takes exactly one operator: eq, ne, gt, gte, lt, lte or in"
    message: str = error.message
    if kind == "minProperties" or (kind == "maxProperties"):
        return message
    return message


def _hint(error: ValidationError) -> str:
    description = error.schema.get("description")
    return f" ({description})" if description else ""
