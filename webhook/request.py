"""A hook request: JSON in, validated with our schema, normalised into one shape.

Real clients send variants (see tests/fixtures/external): `patientId` prefixed `Patient/`, draft orders as a
Bundle without `type` or a plain array, `doseAndRate` as an object, STU3 `dosageInstruction[].doseQuantity`,
and the deprecated `medication-prescribe` hook with `context.medications`. They are all accepted here, so nothing
further down sees them. A dose is never guessed: normalising only moves the dose that was sent.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache

import jsonschema
import jsonschema_rs
import orjson
from flask import request
from jsonschema import Draft202012Validator

import schemas
from webhook.outcome import HookError, bad_request

SCHEMA_FILE = "cds-request.schema.json"

ORDER_HOOKS = ("order-select", "order-sign")
DEPRECATED_ORDER_HOOK = "medication-prescribe"

# STU3 Dosage elements that R4 moved into Dosage.doseAndRate[].
_DOSE_AND_RATE_ELEMENTS = ("doseQuantity", "doseRange", "rateRatio", "rateRange", "rateQuantity")


@dataclass(frozen=True)
class HookRequest:
    hook: str  # the hook the service answers; medication-prescribe arrives here as the service's order hook
    sent_hook: str  # the hook named in the request
    hook_instance: str
    patient_id: str
    context: dict
    draft_orders: tuple[dict, ...]  # order hooks: the orders in focus (the selections, for order-select)
    prefetch: dict
    fhir_server: str | None = None
    access_token: str | None = field(default=None, repr=False)  # transient: never logged, never stored

    @property
    def is_order_hook(self) -> bool:
        return self.hook in ORDER_HOOKS or self.hook == DEPRECATED_ORDER_HOOK


@cache
def schema() -> dict:
    return schemas.load(SCHEMA_FILE)


@cache
def _validator(definition: str | None = None, hook: str | None = None) -> Draft202012Validator:
    """A validator of the whole request for one hook, or of one $defs entry.

    Per hook, the schema's `allOf` of if-hook-then-context branches is narrowed to the one branch that applies, and
    every `$ref` is replaced by what it names: the same rules, checked in a third of the time (jsonschema resolves a
    reference on every use)."""
    root = schema()
    if definition is not None:
        return Draft202012Validator(_inline_refs(root["$defs"][definition], root["$defs"]))
    narrowed = {key: value for key, value in root.items() if key not in ("allOf", "$defs")}
    branches = [branch["then"] for branch in root.get("allOf", []) if _branch_hook(branch) == hook]
    if branches:
        narrowed["allOf"] = branches
    return Draft202012Validator(_inline_refs(narrowed, root["$defs"]))


@cache
def _screen(definition: str | None = None, hook: str | None = None) -> jsonschema_rs.Validator:
    """The same schema as `_validator`, compiled by jsonschema-rs: it only says whether a document is valid, in
    about 1 us where jsonschema takes 75 for a 30 KB request. A document it passes is valid; one it does not is
    looked at again by jsonschema, whose verdict and error objects name the violation (and decide, should the two
    ever disagree)."""
    return jsonschema_rs.validator_for(_validator(definition, hook).schema)


def passes_screen(document: object, definition: str | None, hook: str | None) -> bool:
    try:
        return _screen(definition, hook).is_valid(document)
    except ValueError:  # a value jsonschema-rs cannot take in (a lone surrogate): jsonschema decides
        return False


@cache
def _branch_hooks() -> frozenset[str]:
    return frozenset(_branch_hook(branch) for branch in schema().get("allOf", [])) - {None}


def _branch_hook(branch: dict) -> str | None:
    return branch.get("if", {}).get("properties", {}).get("hook", {}).get("const")


def _inline_refs(node: object, definitions: dict) -> object:
    """`node` with each local `{"$ref": "#/$defs/x"}` replaced by x (our schemas have no recursive references)."""
    if isinstance(node, list):
        return [_inline_refs(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = _inline_refs(definitions[ref.removeprefix("#/$defs/")], definitions)
        siblings = {k: _inline_refs(v, definitions) for k, v in node.items() if k != "$ref"}
        return {"allOf": [target, siblings]} if siblings else target
    return {key: _inline_refs(value, definitions) for key, value in node.items()}


MAX_JSON_DEPTH = 64  # FHIR resources nest about 10 deep; far deeper is an attack on our recursion
MAX_RESOURCES = 10_000  # draft orders plus prefetched resources in one request

# A surrogate as a JSON escape, or as the UTF-8-style bytes json.loads lets through (it decodes "surrogatepass").
# Two patterns, not one alternation (which tried every position of a 30 KB body in Python's matcher: 51 us against
# 12), each searched only where its first byte occurs at all, which `in` finds at memchr speed (14 us -> 1).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE_BYTES = re.compile(rb"\xed[\xa0-\xbf]")
_NOT_QUOTES_OR_BRACKETS = bytes(b for b in range(256) if b not in b'"[]{}')
_SQUARE = bytes.maketrans(b"{}", b"[]")  # for depth, an object is an array
# orjson keeps integers from -2**63 to 2**64 - 1 exact: some of 19 digits are beyond the first already.
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_NUMBER = b"0" * 19
_NOT_PLAIN = object()


def read_body() -> bytes:
    """The body of the request being handled; over MAX_CONTENT_LENGTH it is 413, whether its length was declared or
    it came chunked. (Of a chunked body werkzeug reads up to the limit and returns that much, which then failed
    as JSON cut short: a 400.)"""
    body = request.get_data(cache=False)
    limit = request.max_content_length
    if (limit is not None and request.content_length is None and len(body) >= limit
            and request.environ.get("wsgi.input_terminated") and request.environ["wsgi.input"].read(1)):
        raise HookError(413, f"The request body is larger than {limit} bytes.")
    return body


def load_json(body: bytes) -> object:
    """Parse a request body; malformed or absurdly nested JSON is the caller's error (400), never ours.

    orjson reads a body in plain UTF-8 in about half json's time. What it refuses goes to json, which decides as it
    always has: a byte-order mark, NaN and Infinity, a lone surrogate, other encodings, and malformed JSON. So does
    a body with 19 digits in a row anywhere, since orjson would read an integer beyond 64 bits as a float."""
    document = _read_plain(body)
    if document is _NOT_PLAIN:
        return _read_careful(body)
    if nesting_depth(body) > MAX_JSON_DEPTH:
        raise bad_request(f"The request body nests deeper than {MAX_JSON_DEPTH} levels.")
    return document


def _read_plain(body: bytes) -> object:
    if _LONG_NUMBER in body.translate(_DIGITS_AS_ZERO):
        return _NOT_PLAIN
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _NOT_PLAIN


def _read_careful(body: bytes) -> object:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise bad_request(f"The request body is not valid JSON: {error}") from None
    if json.detect_encoding(body) == "utf-8":
        too_deep = nesting_depth(body) > MAX_JSON_DEPTH
    else:
        too_deep = _depth_exceeds(document, MAX_JSON_DEPTH)
    if too_deep:
        raise bad_request(f"The request body nests deeper than {MAX_JSON_DEPTH} levels.")
    if (json.detect_encoding(body) != "utf-8" or _may_hold_surrogate(body)) and _holds_lone_surrogate(document):
        raise bad_request("The request body holds a string that is not Unicode text (a lone surrogate, such as "
                          "\\ud800).")
    return document


def _may_hold_surrogate(body: bytes) -> bool:
    return ((b"\xed" in body and _SURROGATE_BYTES.search(body) is not None)
            or (b"\\" in body and _SURROGATE_ESCAPE.search(body) is not None))


def _holds_lone_surrogate(document: object) -> bool:
    """A lone surrogate parses as JSON but cannot be stored or logged as UTF-8: refused here, not failing there.
    Only bodies in which _may_hold_surrogate finds one (or not in UTF-8) are checked; a paired escape passes."""
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def nesting_depth(valid_json: bytes) -> int:
    """How deep the arrays and objects of a valid UTF-8 JSON text nest, read from its bytes in C-level steps (a
    walk of the parsed tree cost a quarter of a request's parsing).

    Escaped backslashes, then escaped quotes, are dropped; then all but quotes and brackets. Every quote left opens
    or closes a string: where no string holds a bracket, each string is now two adjacent quotes, which go in one
    pass (it takes two quotes in a row, so every quote left keeps its place, odd or even); otherwise splitting what
    is left on the quotes keeps the text outside strings at the even places. Each pass over what is left takes away
    the innermost pairs of brackets, so the number of passes is the depth."""
    if b"\\" in valid_json:
        valid_json = valid_json.replace(b"\\\\", b"").replace(b'\\"', b"")
    tokens = valid_json.translate(None, _NOT_QUOTES_OR_BRACKETS)
    brackets = tokens.replace(b'""', b"")
    if b'"' in brackets:  # a string holds a bracket
        brackets = b"".join(brackets.split(b'"')[0::2])
    brackets = brackets.translate(_SQUARE)
    depth = 0
    while brackets:
        inner = brackets.replace(b"[]", b"")
        if len(inner) == len(brackets):  # unbalanced, so not valid JSON after all: never loop on it
            raise ValueError("unbalanced brackets")
        brackets, depth = inner, depth + 1
    return depth


def _depth_exceeds(document: object, limit: int) -> bool:
    """Iteratively, so that measuring the depth cannot itself overflow the stack (for UTF-16 and UTF-32 bodies)."""
    stack = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def validate(document: object, definition: str | None = None) -> None:
    """Raise 400 naming the first schema violation, without echoing large or secret values."""
    hook = document.get("hook") if isinstance(document, dict) and definition is None else None
    known = isinstance(hook, str) and hook in _branch_hooks()  # keeps the validator cache bounded
    hook = hook if known else None
    if passes_screen(document, definition, hook):
        return
    error = jsonschema.exceptions.best_match(_validator(definition, hook).iter_errors(document))
    if error is None:
        return
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    message = error.message if len(error.message) <= 200 else f"fails the '{error.validator}' rule"
    if len(error.message) > 200 and "description" in error.schema:
        message += f" ({error.schema['description']})"
    if "fhirAuthorization" in error.absolute_path:
        message = f"fails the '{error.validator}' rule"
    raise bad_request(f"The request does not match the CDS Hooks request schema at {where}: {message}")


def accepted_hooks(service_hook: str) -> tuple[str, ...]:
    """The hooks a service answers: its own, plus the deprecated medication-prescribe for order hooks."""
    if service_hook in ORDER_HOOKS:
        return (service_hook, DEPRECATED_ORDER_HOOK)
    return (service_hook,)


def parse_hook_request(body: bytes, service_hook: str) -> HookRequest:
    document = load_json(body)
    validate(document)
    sent_hook = document["hook"]
    if sent_hook not in accepted_hooks(service_hook):
        raise bad_request(f"This service answers the '{service_hook}' hook; the request is for '{sent_hook}'.")
    context = document["context"]
    orders_key = "medications" if sent_hook == DEPRECATED_ORDER_HOOK else "draftOrders"
    orders = [normalise_resource(r) for r in bundle_resources(context.get(orders_key))]
    prefetch = document.get("prefetch") or {}
    count = len(orders) + sum(len(bundle_resources(value)) or 1 for value in prefetch.values() if value)
    if count > MAX_RESOURCES:
        raise HookError(413, f"The request carries {count} resources; at most {MAX_RESOURCES} are read.")
    authorization = document.get("fhirAuthorization") or {}
    return HookRequest(
        hook=service_hook,
        sent_hook=sent_hook,
        hook_instance=document["hookInstance"],
        patient_id=patient_id(context.get("patientId", "")),
        context=context,
        draft_orders=tuple(orders_in_focus(orders, context.get("selections"))),
        prefetch=prefetch,
        fhir_server=document.get("fhirServer"),
        access_token=authorization.get("access_token"),
    )


def patient_id(value: str) -> str:
    """`Patient/123` and `123` name the same patient."""
    return value.removeprefix("Patient/").strip()


def bundle_resources(value: object) -> list[dict]:
    """Resources of a Bundle (with or without `type`) or of a plain array; anything else holds none."""
    if isinstance(value, dict) and value.get("resourceType") == "Bundle":
        entries = value.get("entry")
        items = [e.get("resource") for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    elif isinstance(value, list):
        items = value
    else:
        items = []
    return [r for r in items if isinstance(r, dict) and isinstance(r.get("resourceType"), str)]


def orders_in_focus(orders: list[dict], selections: object) -> list[dict]:
    """For order-select, the selected orders; if the selections name none of the orders, all of them."""
    if not isinstance(selections, list) or not selections:
        return orders
    wanted = {s for s in selections if isinstance(s, str)}
    chosen = [o for o in orders if f"{o.get('resourceType')}/{o.get('id')}" in wanted]
    return chosen or orders


def normalise_resource(resource: dict) -> dict:
    """An R4 MedicationRequest from the dosage variants clients send; other resources unchanged."""
    if resource.get("resourceType") != "MedicationRequest" or not resource.get("dosageInstruction"):
        return resource
    # Copies of the parts that change, not of the whole resource: the request's own dicts stay as sent.
    dosages = [_normalise_dosage(dict(d)) for d in _as_list(resource["dosageInstruction"]) if isinstance(d, dict)]
    return {**resource, "dosageInstruction": dosages}


def _as_list(value: object) -> list:
    """An element that should be an array: an object alone becomes a list of one; anything else, nothing."""
    if isinstance(value, dict):
        return [value]
    return value if isinstance(value, list) else []


def _normalise_dosage(dosage: dict) -> dict:
    dose_and_rate = _as_list(dosage.get("doseAndRate"))
    stu3 = {k: dosage.pop(k) for k in _DOSE_AND_RATE_ELEMENTS if k in dosage}
    if stu3 and not dose_and_rate:
        dose_and_rate = [stu3]
    if dose_and_rate:
        dosage["doseAndRate"] = [d for d in dose_and_rate if isinstance(d, dict)]
    return dosage
