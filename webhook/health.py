"""Liveness and readiness for load balancers and orchestrators; no token needed.

`/healthz`: the process answers. `/readyz`: rulesets are loaded and the store answers.
"""
from __future__ import annotations

from flask import Blueprint, current_app

from webhook import metrics
from webhook.outcome import HookError

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> dict:
    state = current_app.extensions["cdsrules"]
    if not state.services:
        raise HookError(503, "No CDS service is loaded.")
    if not state.store.ping():
        raise HookError(503, "The store does not answer.")
    rulesets = sorted({s.ruleset.ref for s in state.services.values()})
    body = {"status": "ready", "rulesets": rulesets, "services": len(state.services),
            "rulesLoadedAt": state.active.loaded_at, "auditFailures": metrics.audit_failures()}
    if state.reload_error:
        body["reloadError"] = state.reload_error  # the last good set keeps serving
    return body
