"""The workbench blueprint: access control, security headers, login, errors as pages, and helpers the pages share.

Each page lives in its own module (rulesets, drafts, patients, timeline, compare, outcomes) and adds its routes to
this one blueprint; nothing here evaluates anything.
"""
from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Any

from flask import Blueprint, Response, abort, current_app, g, jsonify, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException, ServiceUnavailable

from engine.sandbox import SandboxEngine
from engine.templates import format_number
from webhook import hosts
from webhook.outcome import operation_outcome
from webhook.workbench import access
from webhook.workbench.context import Snapshot, VersionInfo, Workbench
from webhook.workbench.dossier_render import show_value
from webhook.workbench.markdown import render_markdown
from webhook.workbench.throttle import Throttle

bp = Blueprint("workbench", __name__, url_prefix="/workbench", template_folder="templates",
               static_folder="static", static_url_path="/static")

PUBLIC_ENDPOINTS = {"workbench.login", "workbench.static"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}  # change nothing, so another site may link to them
SECURITY_HEADERS = {
    # Nothing is fetched from anywhere but this server; inline SVG needs no source.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Nothing leaves for another site; our own forms keep their Origin (under no-referrer a browser sends
    # `Origin: null` with a form post, which the cross-site check cannot tell from a forged one).
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages show patient data
}


def workbench() -> Workbench:
    return current_app.extensions["cdsrules.workbench"]


def policy() -> access.AccessPolicy:
    return current_app.extensions["cdsrules.workbench.access"]


def throttle() -> Throttle:
    return current_app.extensions["cdsrules.workbench.throttle"]


def snapshot() -> Snapshot:
    return workbench().snapshot()


BUSY_RETRY_SECONDS = 5


def sandbox() -> SandboxEngine:
    """The engine, for this request: one request at a time in a worker uses it. Its child answers one call at a
    time, and a request waiting for it would hold a thread that the EHR's calls need (`cdsrules serve --workbench`
    gives each worker two), so another request is answered 503 at once."""
    if not g.get("sandbox_seat"):
        if not workbench().sandbox_seat.acquire(blocking=False):
            raise ServiceUnavailable("The workbench is busy with another check in this server process; try again "
                                     "in a few seconds.", retry_after=BUSY_RETRY_SECONDS)
        g.sandbox_seat = True
    return workbench().engine


@bp.teardown_request
def _free_sandbox_seat(_error: BaseException | None) -> None:
    if g.pop("sandbox_seat", False):
        workbench().sandbox_seat.release()


def today() -> dt.date:
    return workbench().clock()


@bp.before_request
def _check_access() -> Response | None:
    """The Host, then (for changes) that no other site sent it, then the credential."""
    wrong_host = hosts.wrong_host(policy().hosts)
    if wrong_host:
        abort(421, description=wrong_host)
    forged = hosts.cross_site(policy().hosts) if request.method not in SAFE_METHODS else None
    if forged:
        abort(403, description=forged)  # another site's page posting through the user's browser
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    caller = access.identify(policy(), throttle())
    if caller is None:
        return access.refuse(policy())
    g.workbench_user, g.workbench_identity = caller.shown, caller.user
    return None


def csp_nonce() -> str:
    """This response's nonce for style elements that a page's script adds (the check page's editor inserts its
    styles so); a page that asks for one gets `'nonce-…'` added to its style-src, other pages keep 'self' alone."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(18)
    return str(g.csp_nonce)


def content_security_policy(nonce: str | None) -> str:
    policy = SECURITY_HEADERS["Content-Security-Policy"]
    return policy.replace("style-src 'self'", f"style-src 'self' 'nonce-{nonce}'") if nonce else policy


@bp.after_request
def _headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if g.get("csp_nonce") and response.headers.get("Content-Security-Policy") == SECURITY_HEADERS[
            "Content-Security-Policy"]:
        response.headers["Content-Security-Policy"] = content_security_policy(g.csp_nonce)
    return response


@bp.errorhandler(HTTPException)
def _error_page(error: HTTPException) -> tuple[Any, int, list]:
    """A page, or an OperationOutcome for the JSON endpoint; headers such as Retry-After and Allow are kept."""
    status = error.code or 500
    headers = [(name, value) for name, value in error.get_headers() if name.lower() != "content-type"]
    if request.path.endswith(".json"):
        code = "transient" if status == 503 else "processing"
        return jsonify(operation_outcome(code, error.description or error.name)), status, headers
    return render_template("error.html", error=error), status, headers


@bp.app_template_filter("num")
def _num(value: Any) -> str:
    return "—" if value is None else format_number(value)


bp.app_template_filter("show")(show_value)


@bp.app_template_filter("markdown")
def _markdown(text: str | None):
    return render_markdown(text)


@bp.app_template_filter("pretty_json")
def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@bp.app_context_processor
def _globals() -> dict:
    return {"workbench_user": g.get("workbench_user"), "today": today() if request.blueprint == "workbench" else None,
            "csp_nonce": csp_nonce}


# --- login -------------------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str:
    """A form for the token; a good one sets a signed, HttpOnly, same-site cookie limited to /workbench."""
    rule = policy()
    if not rule.has_token:
        return access.refuse(rule)
    target = access.safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("login.html", next=target, failed=False)
    owner = access.token_owner(rule, throttle(), request.form.get("token"))
    if owner is None:
        return Response(render_template("login.html", next=target, failed=True), status=401)
    response = redirect(target)
    value = access.cookie_value(rule, user=owner.user.name if owner.user else None)
    response.set_cookie(access.COOKIE, value, max_age=access.COOKIE_SECONDS, path="/workbench",
                        httponly=True, samesite="Strict", secure=request.is_secure)
    return response


@bp.post("/logout")
def logout() -> Response:
    response = redirect(url_for("workbench.login"))
    response.delete_cookie(access.COOKIE, path="/workbench")
    return response


# --- shared helpers ---------------------------------------------------------------------------


def find_version(ruleset_id: str, version: str) -> VersionInfo:
    """A version that exists and loads, or a 404 page saying which."""
    info = snapshot().find(ruleset_id, version)
    if info is None:
        abort(404, description=f"No version {version} of ruleset '{ruleset_id}' under the rules directory.")
    if info.ruleset is None:
        abort(404, description=f"{info.ref} does not load: {len(info.errors)} error(s); see the rulesets page.")
    return info


def version_choices() -> list[VersionInfo]:
    """Every loadable version, newest first within a ruleset, for the pickers."""
    found = []
    for versions in snapshot().versions.values():
        found += [info for info in reversed(list(versions.values())) if info.ruleset]
    return found


def chosen_version(value: str | None) -> VersionInfo | None:
    """`id@version` from a form; the newest released version (else the newest) when nothing was chosen."""
    choices = version_choices()
    if value and "@" in value:
        ruleset_id, _, version = value.partition("@")
        return next((c for c in choices if c.ruleset_id == ruleset_id and c.version == version), None)
    on = today()
    released = [c for c in choices if c.status(on) == "released"]
    return (released or choices or [None])[0]


def parse_date(value: str | None, default: dt.date) -> dt.date:
    try:
        return dt.date.fromisoformat(value) if value else default
    except ValueError:
        return default
