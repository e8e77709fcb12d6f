"""Structured amendments of a ruleset's YAML text: set a parameter, change a table row, set the version.

An amendment must not disturb anything else of the file: its comments, key order, flow style and layout are what
reviewers read. So the text is never re-dumped. ruamel.yaml's round-trip composer gives every node of the document
with its exact span in the text; the edited value's span is replaced by the new value written in the node's own
style, and every other byte stays as it was. The result is read back to prove it says what was asked; it is then
validated and tested like any draft.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .document import plain_data

Value = str | int | float | bool


class EditError(ValueError):
    """An edit that cannot be applied: it names nothing in the text, or the text is not a ruleset document."""


@dataclass(frozen=True)
class SetParameter:
    """parameters.<name>.value, or the parameter itself when it is written as a bare value."""

    name: str
    value: Value


@dataclass(frozen=True)
class SetTableRow:
    """tables.<table>.rows[<row>]: its band (an interval such as "[0, 30)") and/or its output (a value or
    {"param": name})."""

    table: str
    row: int
    band: str | None = None
    output: Value | dict[str, str] | None = None


@dataclass(frozen=True)
class SetVersion:
    version: str


Edit = SetParameter | SetTableRow | SetVersion


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    node: Node


def apply_edit(text: str, edit: Edit) -> str:
    """The text with the one value the edit names replaced; raises EditError when it names nothing."""
    root = _compose(text)
    replacements = _replacements(root, edit, text)
    for span, new in sorted(replacements, key=lambda r: r[0].start, reverse=True):
        text = text[:span.start] + new + text[span.end:]
    _confirm(text, edit)
    return text


def apply_edits(text: str, edits: list[Edit]) -> str:
    for edit in edits:
        text = apply_edit(text, edit)
    return text


# --- finding what the edit names ------------------------------------------------------------


def _compose(text: str) -> MappingNode:
    try:
        root = YAML(typ="rt").compose(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise EditError(f"the text is not YAML ({where}{error.problem}); fix it before editing it by the form") \
            from None
    except YAMLError as error:
        raise EditError(f"the text is not YAML: {error}") from None
    if not isinstance(root, MappingNode):
        raise EditError("the text is not a ruleset: its top level must be a mapping")
    return root


def _child(node: Node, key: str) -> Node | None:
    if not isinstance(node, MappingNode):
        return None
    return next((value for name, value in node.value if isinstance(name, ScalarNode) and name.value == key), None)


def _names(node: Node | None) -> list[str]:
    return [name.value for name, _ in node.value if isinstance(name, ScalarNode)] if isinstance(
        node, MappingNode) else []


def _replacements(root: MappingNode, edit: Edit, text: str) -> list[tuple[_Span, str]]:
    if isinstance(edit, SetVersion):
        node = _child(root, "version")
        if node is None:
            raise EditError("the text has no top-level 'version' to set")
        return [(_scalar_span(node, "version", text), _scalar(edit.version, node, text))]
    if isinstance(edit, SetParameter):
        return [_parameter(root, edit, text)]
    return _table_row(root, edit, text)


def _parameter(root: MappingNode, edit: SetParameter, text: str) -> tuple[_Span, str]:
    parameters = _child(root, "parameters")
    parameter = _child(parameters, edit.name) if parameters is not None else None
    if parameter is None:
        known = ", ".join(_names(parameters)) or "none"
        raise EditError(f"no parameter '{edit.name}' in the text (parameters: {known})")
    where = f"parameters.{edit.name}"
    if isinstance(parameter, MappingNode):
        node = _child(parameter, "value")
        if node is None:
            raise EditError(f"{where} has no 'value' to set")
        return _scalar_span(node, f"{where}.value", text), _scalar(edit.value, node, text)
    return _scalar_span(parameter, where, text), _scalar(edit.value, parameter, text)


def _table_row(root: MappingNode, edit: SetTableRow, text: str) -> list[tuple[_Span, str]]:
    tables = _child(root, "tables")
    table = _child(tables, edit.table) if tables is not None else None
    if table is None:
        raise EditError(f"no table '{edit.table}' in the text (tables: {', '.join(_names(tables)) or 'none'})")
    rows = _child(table, "rows")
    count = len(rows.value) if isinstance(rows, SequenceNode) else 0
    if not isinstance(rows, SequenceNode) or not 0 <= edit.row < count:
        raise EditError(f"table '{edit.table}' has no row {edit.row} (it has {count}, numbered from 0)")
    if edit.band is None and edit.output is None:
        raise EditError(f"the edit of tables.{edit.table}.rows[{edit.row}] changes neither its band nor its output")
    row, where = rows.value[edit.row], f"tables.{edit.table}.rows[{edit.row}]"
    found = []
    if edit.band is not None:
        node = _child(row, "band")
        if node is None:
            raise EditError(f"{where} has no 'band'")
        found.append((_scalar_span(node, f"{where}.band", text), _scalar(edit.band, node, text)))
    if edit.output is not None:
        node = _child(row, "output")
        if node is None:
            raise EditError(f"{where} has no 'output'")
        found.append(_output(node, edit.output, f"{where}.output", text))
    return found


def _output(node: Node, output: Value | dict[str, str], where: str, text: str) -> tuple[_Span, str]:
    """A row's output: a value, or a parameter named as {param: name} (in place when both are such)."""
    if isinstance(output, dict):
        if set(output) != {"param"} or not isinstance(output["param"], str):
            raise EditError(f"{where}: an output that names a parameter is {{\"param\": name}}, not {output}")
        inner = _child(node, "param")
        if inner is not None:
            return _scalar_span(inner, f"{where}.param", text), _scalar(output["param"], inner, text)
        return _span(node, text), "{param: " + _plain_or_quoted(output["param"]) + "}"
    if isinstance(node, ScalarNode):
        return _scalar_span(node, where, text), _scalar(output, node, text)
    return _span(node, text), _plain_or_quoted(output) if isinstance(output, str) else _literal(output)


def _scalar_span(node: Node, where: str, text: str) -> _Span:
    if not isinstance(node, ScalarNode):
        raise EditError(f"{where} is not a single value (a {type(node).__name__[:-4].lower()}); edit it in the text")
    return _span(node, text)


def _span(node: Node, text: str) -> _Span:
    """Where the node is written; a block scalar's or block collection's trailing line breaks are not its own."""
    start, end = node.start_mark.index, node.end_mark.index
    while end > start and text[end - 1] in " \t\r\n":
        end -= 1
    return _Span(start, end, node)


# --- writing the new value ------------------------------------------------------------------

_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+/-]*( [A-Za-z0-9_.+/-]+)*")


def _scalar(value: Value, node: Node, text: str) -> str:
    """The value as YAML, in the old value's style where it has one: quoted stays quoted, plain stays plain."""
    if not isinstance(value, str):
        return _literal(value)
    style = getattr(node, "style", None)
    if style in ("|", ">"):
        return _block(value, node, text)
    if style == "'" and "'" not in value and "\n" not in value:
        return f"'{value}'"
    if style == '"':
        return json.dumps(value, ensure_ascii=False)
    return _plain_or_quoted(value)


def _block(value: str, node: Node, text: str) -> str:
    """A literal (|) or folded (>) value stays one, under its indicator and at its indentation."""
    lines = value.rstrip("\n").split("\n")
    body = text[node.start_mark.index:node.end_mark.index].split("\n")[1:]
    first = next((line for line in body if line.strip()), "")
    indent = first[:len(first) - len(first.lstrip(" "))] or " " * (node.start_mark.column + 2)
    header = text[node.start_mark.index:].split("\n", 1)[0].rstrip()  # the indicator, its chomping kept
    if any(line != line.strip() for line in lines) or (getattr(node, "style", None) == ">" and len(lines) > 1):
        return json.dumps(value, ensure_ascii=False)  # breaks or edge spaces a block would not keep as they are
    return header + "".join(f"\n{indent}{line}" if line else "\n" for line in lines)


def _plain_or_quoted(value: str) -> str:
    """Plain when YAML reads it back as the same string (not a number, boolean or null), else double-quoted."""
    if _PLAIN.fullmatch(value) and plain_data(value) == value:
        return value
    return json.dumps(value, ensure_ascii=False)


def _literal(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
            raise EditError(f"{value} is not a value a ruleset can hold")
        return repr(value)
    raise EditError(f"{value!r} is not a value a ruleset can hold")


# --- proving the result ---------------------------------------------------------------------


def _confirm(text: str, edit: Edit) -> None:
    """The edited text reads back, as the loader reads a ruleset, with the new value where it was asked: never a
    silent near miss."""
    data = plain_data(text)
    read: Any
    wanted: Any
    if isinstance(edit, SetVersion):
        read, wanted = data.get("version"), edit.version
    elif isinstance(edit, SetParameter):
        parameter = data["parameters"][edit.name]
        read, wanted = parameter.get("value") if isinstance(parameter, dict) else parameter, edit.value
    else:
        row = data["tables"][edit.table]["rows"][edit.row]
        read = {k: row.get(k) for k in ("band", "output") if getattr(edit, k) is not None}
        wanted = {k: getattr(edit, k) for k in ("band", "output") if getattr(edit, k) is not None}
    if isinstance(read, str) and isinstance(wanted, str):  # a block value ends with a line break of its own
        read, wanted = read.rstrip("\n"), wanted.rstrip("\n")
    if read != wanted or type(read) is not type(wanted):
        raise EditError(f"the edited text reads {read!r} where {wanted!r} was asked; nothing was changed")
