"""Amend by a form: the check page lists the draft's parameters and table rows; a changed value is sent here, and
the server rewrites the YAML (engine/edits.py: that value alone, comments and layout kept), proposes the next
version (engine/proposal.py) and answers the new text with the diff. The page puts the text in the editor, whose
check then runs as for a typed edit.

The text is a draft, untrusted: it is read and rewritten in the workbench's sandbox child, as it is checked.
"""
from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml
from flask import jsonify, request

from engine.document import plain_data
from engine.edits import Edit, EditError, SetParameter, SetTableRow, SetVersion, apply_edit
from engine.errors import EvaluationError
from engine.proposal import propose_version
from webhook.outcome import HookError, operation_outcome
from webhook.request import load_json
from webhook.workbench.views import sandbox, snapshot


@dataclass
class ParameterField:
    name: str
    value: Any
    type: str  # number | boolean | text: how the form writes it and sends it back
    unit: str
    source: str
    description: str


@dataclass
class RowField:
    index: int
    band: str
    output: Any  # a value, or the parameter's name when output_param
    output_param: bool
    type: str


@dataclass
class TableField:
    name: str
    description: str
    rows: list[RowField]


@dataclass
class FormFields:
    parameters: list[ParameterField] = field(default_factory=list)
    tables: list[TableField] = field(default_factory=list)
    problem: str = ""  # why the text gives no form (it is not YAML, or not a ruleset's shape)


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, (int, float)) else "text"


def form_fields(text: str) -> FormFields:
    """The parameters and table rows of a draft's text, as the form shows them (run in the sandbox's child)."""
    try:
        data = plain_data(text)
        parameters = [_parameter(name, spec) for name, spec in (data.get("parameters") or {}).items()]
        tables = [TableField(name, str(table.get("description", "")).strip(),
                             [_row(i, row) for i, row in enumerate(table.get("rows") or [])])
                  for name, table in (data.get("tables") or {}).items()]
    except (yaml.YAMLError, AttributeError, TypeError, KeyError) as exc:
        return FormFields(problem=f"the text has no parameters or tables to list ({type(exc).__name__}); fix it in "
                                  "the editor")
    return FormFields(parameters, tables)


def _parameter(name: str, spec: Any) -> ParameterField:
    if not isinstance(spec, dict):  # a bare value
        return ParameterField(name, spec, _type(spec), "", "", "")
    value = spec.get("value")
    return ParameterField(name, value, _type(value), str(spec.get("unit", "")), str(spec.get("source", "")),
                          " ".join(str(spec.get("description", "")).split()))


def _row(index: int, row: dict[str, Any]) -> RowField:
    output = row["output"]
    if isinstance(output, dict):
        return RowField(index, str(row["band"]), output.get("param"), True, "text")
    return RowField(index, str(row["band"]), output, False, _type(output))


# --- the edit -------------------------------------------------------------------------------


def edit_from(body: dict[str, Any]) -> Edit:
    """The edit a request names: {"kind": "parameter", "name", "value"} | {"kind": "row", "table", "row", "band"?,
    "output"?, "output_param"?} | {"kind": "version", "version"}; EditError for any other."""
    kind = body.get("kind")
    if kind == "parameter" and isinstance(body.get("name"), str) and _is_value(body.get("value")):
        return SetParameter(body["name"], body["value"])
    if kind == "row" and isinstance(body.get("table"), str) and isinstance(body.get("row"), int):
        output = body.get("output")
        if output is not None and body.get("output_param"):
            output = {"param": str(output)}
        elif output is not None and not _is_value(output):
            raise EditError("a row's output is a number, a text or a boolean")
        band = body.get("band")
        return SetTableRow(body["table"], body["row"], band=str(band) if band is not None else None, output=output)
    if kind == "version" and isinstance(body.get("version"), str):
        return SetVersion(body["version"])
    raise EditError('the edit is {"kind": "parameter", "name": ..., "value": ...}, {"kind": "row", "table": ..., '
                    '"row": <index>, "band": ..., "output": ...} or {"kind": "version", "version": ...}')


def _is_value(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


@dataclass
class Amendment:
    text: str
    diff: str
    proposal: dict[str, Any] | None
    problem: str = ""


def amend_in_child(text: str, edit: Edit, base_text: str | None, taken: list[str], released: list[str],
                   base_version: str | None) -> Amendment:
    """The edit applied, the unified diff, and the next version after `base_version` (run in the sandbox's
    child)."""
    try:
        new_text = apply_edit(text, edit)
    except EditError as error:
        return Amendment(text, "", None, str(error))
    diff = "".join(difflib.unified_diff(text.splitlines(keepends=True), new_text.splitlines(keepends=True),
                                        "before", "after", n=1))
    return Amendment(new_text, diff, _proposal(base_text, new_text, base_version, taken, released))


def _proposal(base_text: str | None, new_text: str, base_version: str | None, taken: list[str],
              released: list[str]) -> dict[str, Any] | None:
    if base_text is None or base_version is None:
        return None
    try:
        proposal = propose_version(base_version, plain_data(base_text), plain_data(new_text), taken, released)
    except (AttributeError, TypeError, KeyError, ValueError):  # a draft not in a ruleset's shape: no proposal yet
        return None
    return proposal.as_dict()


def base_of(ruleset_id: str, base: str | None) -> tuple[str | None, str | None]:
    """(text, version) the amendment is compared with: the version it started from, else the latest released."""
    versions = snapshot().versions.get(ruleset_id, {})
    if base and "@" in base:
        rid, _, version = base.partition("@")
        info = versions.get(version) if rid == ruleset_id else None
        if info is not None and info.ruleset is not None:
            return info.ruleset.source_text, version
    released = [info for info in versions.values() if info.release and info.ruleset]
    if released:
        return released[-1].ruleset.source_text, released[-1].version  # type: ignore[union-attr]
    return None, None


def amend_json():
    """POST {"text", "ruleset", "base": "id@version", "edit": {...}} -> {"text", "diff", "proposal"}; an edit that
    names nothing is a 400 with an OperationOutcome saying what exists."""
    try:
        body = load_json(request.get_data(cache=False))
    except HookError as error:
        return jsonify(operation_outcome(error.code, error.diagnostics)), error.status
    if not isinstance(body, dict) or not isinstance(body.get("edit"), dict):
        shape = 'The body must be a JSON object: {"text": ..., "ruleset": ..., "base": ..., "edit": {...}}.'
        return jsonify(operation_outcome("invalid", shape)), 400
    try:
        edit = edit_from(body["edit"])
    except EditError as error:
        return jsonify(operation_outcome("invalid", str(error))), 400
    ruleset_id = str(body.get("ruleset", ""))
    base_text, base_version = base_of(ruleset_id, str(body.get("base") or ""))
    versions = snapshot().versions.get(ruleset_id, {})
    taken = list(versions)
    released = [v for v, info in versions.items() if info.release]
    try:
        amendment = sandbox().run(amend_in_child, str(body.get("text", "")), edit, base_text, taken, released,
                                  base_version, doing="amending the draft")
    except EvaluationError as error:
        return jsonify(operation_outcome("transient", str(error))), 503
    if amendment.problem:
        return jsonify(operation_outcome("invalid", amendment.problem)), 400
    return jsonify({**asdict(amendment), "base": f"{ruleset_id}@{base_version}" if base_version else None})
