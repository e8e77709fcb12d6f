"""The app factory: `create_app(config)` builds a Flask app of the CDS Hooks service from a configuration.

The rules it serves are loaded once per process by webhook.state; here the app is only put together: the runtime,
the host guard, CORS, authentication, the error handlers and the blueprints.

Config keys: RULES_DIR (default "rules"), DB_URL (default store.DEFAULT_DB_URL), AUTH_CONFIG (a path, or
None for no authentication), MAX_CONTENT_LENGTH (bytes, default 5 MiB), FHIR_TIMEOUT (seconds, default 3),
FHIR_SERVERS (without auth: the fhirServer URLs we may fetch from; None = any), CLOCK (a callable returning
today's date; default `datetime.date.today`), WORKBENCH (serve the pharmacist workbench under /workbench/),
ALLOWED_HOSTS (host names answered besides loopback's; see webhook/hosts.py), KNOWN_GOOD_DIR (set by
`cdsrules serve`: where the last good rule set is kept for the workers; None = load the rules folder itself).
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from flask import Flask
from flask_cors import CORS

from engine.runtime import Engine
from store import DEFAULT_DB_URL, Store
from webhook import auth, feedback, health, hooks, hosts, openapi, outcome
from webhook.known_good import KnownGood
from webhook.metrics import register_metrics
from webhook.prefetch import Fetcher
from webhook.state import Runtime

DEFAULTS: dict[str, Any] = {
    "RULES_DIR": "rules",
    "DB_URL": DEFAULT_DB_URL,
    "AUTH_CONFIG": None,
    "MAX_CONTENT_LENGTH": 5 * 1024 * 1024,
    "FHIR_TIMEOUT": 3.0,
    "FHIR_SERVERS": None,
    "CLOCK": dt.date.today,
    "WORKBENCH": False,
    "ALLOWED_HOSTS": (),
    "KNOWN_GOOD_DIR": None,
}
APP_NAME = "webhook"  # the package's: Flask takes the app's logger and root folder from it


def create_app(config: dict[str, Any] | None = None) -> Flask:
    settings = {**DEFAULTS, **(config or {})}
    app = Flask(APP_NAME)
    app.config.update({k: v for k, v in settings.items() if k != "CLOCK"})
    app.json.sort_keys = False

    store = Store(settings["DB_URL"])
    store.create_tables()
    authenticator = auth.load_authenticator(settings["AUTH_CONFIG"], store) if settings["AUTH_CONFIG"] else None
    known_good = settings["KNOWN_GOOD_DIR"]
    state = Runtime(
        rules_dir=Path(settings["RULES_DIR"]),
        known_good=KnownGood(Path(known_good) if known_good else None),
        engine=Engine(),
        store=store,
        fetcher=Fetcher(float(settings["FHIR_TIMEOUT"])),
        clock=settings["CLOCK"],
        authenticated=authenticator is not None,
        fhir_servers=settings["FHIR_SERVERS"],
    )
    state.load_at_start()
    app.extensions["cdsrules"] = state
    register_metrics(app)  # first, so its timing covers the reload check and auth as well
    if authenticator is None:  # then only loopback stands between a web page and us: refuse DNS rebinding
        hosts.guard(app, hosts.Hosts.allowing(settings["ALLOWED_HOSTS"]))
    app.before_request(state.reload_if_asked)
    CORS(app, resources={r"/cds-services*": {"origins": "*"}}, allow_headers=["Authorization", "Content-Type"],
         methods=["GET", "POST", "OPTIONS"], max_age=600)
    auth.init_app(app, authenticator)
    outcome.register(app)
    for blueprint in (hooks.bp, feedback.bp, health.bp, openapi.bp):
        app.register_blueprint(blueprint)
    if settings["WORKBENCH"]:  # shows patient data: only when asked for, behind its own credential
        from webhook.workbench import register_workbench
        register_workbench(app, settings)
    return app
