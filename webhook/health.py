"""Liveness and readiness for load balancers and orchestrators; no token needed.

`/healthz`: the process answers. `/readyz`: rulesets are loaded and the store answers; when no good set could be
loaded, 503 with the reason. Both are public (even with auth on), so they show no absolute server paths: a refused
reload names its files within the rules folder.
"""
from __future__ import annotations

import re
from pathlib import Path

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
    if state.active is None:
        raise HookError(503, f"No rule set is loaded: {state.reload_error}")
    if not state.services:
        raise HookError(503, "No CDS service is loaded.")
    if not state.store.ping():
        raise HookError(503, "The store does not answer.")
    rulesets = sorted({s.ruleset.ref for s in state.services.values()})
    body = {"status": "ready", "rulesets": rulesets, "services": len(state.services),
            "rulesLoadedAt": state.active.loaded_at, "auditFailures": metrics.audit_failures()}
    if state.reload_error:
        body["reloadError"] = without_server_paths(state.reload_error, state.rules_dir)  # the last good set serves
    return body


# An absolute path: a slash not inside a word, a URL or a relative path, then its parts up to the last one.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s/:'\"]+/)*([^\s/:'\"]+)")


def without_server_paths(text: str, rules_dir: Path) -> str:
    """`text` with paths in the rules folder made relative to its parent (`rules/<ruleset>/1.2.0.yaml`) and any
    other absolute path cut to its last part."""
    folders = {str(rules_dir), str(rules_dir.absolute()), str(rules_dir.resolve())}
    for folder in sorted((f for f in folders if f.startswith("/") and f != "/"), key=len, reverse=True):
        text = text.replace(folder.rstrip("/") + "/", f"{rules_dir.resolve().name}/")
    return _ABSOLUTE_PATH.sub(r"\1", text)
