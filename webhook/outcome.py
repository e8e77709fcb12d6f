"""Errors as FHIR OperationOutcome bodies, turned into responses in one place.

Routes raise `HookError` (or let Flask raise its HTTP exceptions); `register(app)` installs the one handler
that renders every error, so no route builds an error body itself and bad input never becomes a 500.
"""
from __future__ import annotations

import logging

from flask import Flask, jsonify
from flask.wrappers import Response
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# FHIR issue-type codes for the HTTP statuses we answer with.
_ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    412: "incomplete",
    413: "too-long",
    415: "not-supported",
    503: "transient",
}


class HookError(Exception):
    """An answer other than 200: the status, a FHIR issue code and a message for the caller."""

    def __init__(self, status: int, diagnostics: str = "", code: str | None = None):
        super().__init__(diagnostics)
        self.status = status
        self.diagnostics = diagnostics
        self.code = code or _ISSUE_CODES.get(status, "processing")


def bad_request(diagnostics: str) -> HookError:
    return HookError(400, diagnostics)


def not_found(diagnostics: str) -> HookError:
    return HookError(404, diagnostics)


def precondition_failed(diagnostics: str) -> HookError:
    return HookError(412, diagnostics)


def unauthorized() -> HookError:
    """401 with no detail: the caller learns nothing about why its token was refused."""
    return HookError(401, "")


def operation_outcome(code: str, diagnostics: str = "", severity: str = "error") -> dict:
    issue = {"severity": severity, "code": code}
    if diagnostics:
        issue["diagnostics"] = diagnostics
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def _respond(status: int, code: str, diagnostics: str) -> Response:
    response = jsonify(operation_outcome(code, diagnostics))
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _handle_hook_error(error: HookError) -> Response:
    return _respond(error.status, error.code, error.diagnostics)


def _handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    response = _respond(status, _ISSUE_CODES.get(status, "processing"), error.description or error.name)
    if status == 405 and error.get_headers():
        allow = dict(error.get_headers()).get("Allow")
        if allow:
            response.headers["Allow"] = allow
    return response


def _handle_unexpected(error: Exception) -> Response:
    log.exception("unexpected error while answering a request")
    return _respond(500, "exception", "Internal error; the service logged the details.")


def register(app: Flask) -> None:
    """Render every error raised while handling a request as an OperationOutcome."""
    app.register_error_handler(HookError, _handle_hook_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(Exception, _handle_unexpected)
