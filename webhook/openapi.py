"""`GET /openapi.json`: an OpenAPI 3.1 description of this service, built from the request schemas we validate with.

The request bodies are the same JSON Schemas the service enforces (schemas/cds-request.schema.json), so the
document cannot drift from the behaviour; responses are described from the CDS Hooks 2.0 rules.
"""
from __future__ import annotations

import copy
import json
from functools import cache

from flask import Blueprint, current_app

from webhook.request import schema as request_schema

bp = Blueprint("openapi", __name__)

_OUTCOME = {"description": "A FHIR OperationOutcome saying what went wrong.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}}
_ERRORS = {code: {**_OUTCOME, "description": text} for code, text in {
    "400": "Malformed JSON, or a request that does not match the schema.",
    "401": "Missing or invalid JWT (no detail is given).",
    "404": "No such service.",
    "405": "Method not allowed.",
    "408": "The request, head and body, did not arrive whole in time.",
    "413": "Body too large.",
}.items()}

_CARD = {
    "type": "object",
    "required": ["uuid", "summary", "indicator", "source"],
    "properties": {
        "uuid": {"type": "string"},
        "summary": {"type": "string", "maxLength": 139},
        "detail": {"type": "string"},
        "indicator": {"enum": ["info", "warning", "critical"]},
        "source": {"type": "object", "required": ["label"]},
        "suggestions": {"type": "array", "items": {"type": "object", "required": ["label", "uuid"]}},
        "selectionBehavior": {"enum": ["at-most-one", "any"]},
        "overrideReasons": {"type": "array", "items": {"type": "object", "required": ["code", "display"]}},
        "links": {"type": "array"},
        "extension": {"type": "object"},
    },
}
_SCHEMAS = {
    "OperationOutcome": {"type": "object", "required": ["resourceType", "issue"],
                         "properties": {"resourceType": {"const": "OperationOutcome"},
                                        "issue": {"type": "array", "minItems": 1}}},
    "Card": _CARD,
    "CardsResponse": {"type": "object", "required": ["cards"],
                      "properties": {"cards": {"type": "array", "items": {"$ref": "#/components/schemas/Card"}}}},
    "Discovery": {"type": "object", "required": ["services"],
                  "properties": {"services": {"type": "array", "items": {
                      "type": "object", "required": ["hook", "id", "description"]}}}},
}


def _relocate(node):
    """Point the request schema's local $refs (#/$defs/x) at the OpenAPI components."""
    if isinstance(node, dict):
        return {k: (v.replace("#/$defs/", "#/components/schemas/") if k == "$ref" and isinstance(v, str)
                    else _relocate(v)) for k, v in node.items() if k not in ("$schema", "$id", "$defs")}
    if isinstance(node, list):
        return [_relocate(v) for v in node]
    return node


def _json(ref: str) -> dict:
    return {"application/json": {"schema": {"$ref": ref}}}


def json_body(ref: str) -> dict:
    return {"required": True, "content": _json(ref)}


def ok(description: str, ref: str) -> dict:
    return {"description": description, "content": _json(ref)}


@cache
def openapi_document() -> str:
    source = copy.deepcopy(request_schema())
    schemas = {name: _relocate(definition) for name, definition in source.get("$defs", {}).items()}
    schemas["HookRequest"] = _relocate(source)
    schemas.update(_SCHEMAS)
    service_id = {"name": "service_id", "in": "path", "required": True, "schema": {"type": "string"},
                  "description": "A service as discovery lists it: `<ruleset id>-<hook>`.",
                  "example": "<ruleset>-order-sign"}
    document = {
        "openapi": "3.1.0",
        "info": {"title": "cdsrules CDS Hooks service", "version": "2.0",
                 "description": "CDS Hooks 2.0 services over FHIR R4, generated from released protocol rulesets."},
        "paths": {
            "/cds-services": {"get": {"summary": "Discovery", "responses": {
                "200": ok("The services.", "#/components/schemas/Discovery"),
                "401": _ERRORS["401"], "405": _ERRORS["405"]}}},
            "/cds-services/{service_id}": {"post": {
                "summary": "Call a service", "parameters": [service_id],
                "requestBody": json_body("#/components/schemas/HookRequest"),
                "responses": {"200": ok("Cards; {\"cards\": []} when there is nothing to say.",
                                        "#/components/schemas/CardsResponse"),
                              "412": {**_OUTCOME, "description": "Data the service needs could not be obtained."},
                              **_ERRORS}}},
            "/cds-services/{service_id}/feedback": {"post": {
                "summary": "Feedback on cards", "parameters": [service_id],
                "requestBody": json_body("#/components/schemas/feedbackRequest"),
                "responses": {"200": {"description": "Stored (idempotent).",
                                      "content": {"application/json": {"schema": {"type": "object"}}}},
                              "403": {**_OUTCOME, "description": "Without authentication: sent by another "
                                                                 "site's page (Origin, Sec-Fetch-Site)."},
                              "415": {**_OUTCOME, "description": "Without authentication: a body not sent as JSON."},
                              **_ERRORS}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "Up."}}}},
            "/readyz": {"get": {"summary": "Readiness", "responses": {
                "200": {"description": "Rules loaded and the store answers."},
                "503": {**_OUTCOME, "description": "Not ready."}}}},
        },
        "components": {"schemas": schemas},
    }
    return json.dumps(document)


@bp.get("/openapi.json")
def openapi_json():
    return current_app.response_class(openapi_document(), mimetype="application/json")


