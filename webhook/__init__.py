"""The CDS Hooks service: `create_app(config)` builds a Flask app from a configuration.

Released rulesets and the site mapping are loaded and compiled here, once per process: under gunicorn that is in
each worker after the fork (the app is not preloaded), which is where the engine must live. Drafts (versions not
in a ruleset's releases.yaml) are never served.

Config keys: RULES_DIR (default "rules"), DB_URL (default "sqlite:///var/cdsrules.db"), AUTH_CONFIG (a path, or
None for no authentication), MAX_CONTENT_LENGTH (bytes, default 5 MiB), FHIR_TIMEOUT (seconds, default 3),
FHIR_SERVERS (without auth: the fhirServer URLs we may fetch from; None = any), CLOCK (a callable returning
today's date; default `datetime.date.today`), WORKBENCH (serve the pharmacist workbench under /workbench/),
ALLOWED_HOSTS (host names answered besides loopback's; see webhook/hosts.py).
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from flask import Flask
from flask_cors import CORS

from engine import fhir
from engine.model import Ruleset
from engine.runtime import Engine
from engine.versions import RELOAD_MARKER, Catalog, load_catalog
from webhook import auth, feedback, health, hooks, hosts, openapi, outcome
from webhook.metrics import register_metrics
from webhook.outcome import not_found
from webhook.prefetch import Fetcher
from webhook.services import Service, build_services, released_rulesets
from webhook.store import Store

DEFAULTS: dict[str, Any] = {
    "RULES_DIR": "rules",
    "DB_URL": "sqlite:///var/cdsrules.db",
    "AUTH_CONFIG": None,
    "MAX_CONTENT_LENGTH": 5 * 1024 * 1024,
    "FHIR_TIMEOUT": 3.0,
    "FHIR_SERVERS": None,
    "CLOCK": dt.date.today,
    "WORKBENCH": False,
    "ALLOWED_HOSTS": (),
}
SITE_MAPPING = Path("site") / "fhir-r4.yaml"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActiveRules:
    """One validated, compiled set of released rules; swapped whole on reload, never edited."""

    catalog: Catalog  # released versions; the one in effect on a call's date answers it
    services: dict[str, Service]
    mapping: Any  # the site mapping, as engine.fhir loads it
    loaded_at: str


def load_rules(rules_dir: Path, engine: Engine) -> ActiveRules:
    """Load, verify and compile everything; raises (RulesetErrors, MappingError, ValueError) if any part is wrong."""
    mapping = fhir.load_site_mapping(rules_dir / SITE_MAPPING)
    catalog = load_catalog(rules_dir)
    rulesets = released_rulesets(catalog)
    check_medications(rulesets, mapping)
    for ruleset in rulesets:
        engine.register(ruleset)  # compile every released version now, not on the first request
    return ActiveRules(catalog, build_services(catalog, fhir.prefetch_templates(mapping)), mapping,
                       dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


@dataclass
class Runtime:
    """What a request needs, built once per process."""

    active: ActiveRules
    rules_dir: Path
    engine: Engine
    store: Store
    fetcher: Fetcher
    clock: Callable[[], dt.date]
    authenticated: bool
    fhir_servers: list[str] | None
    reload_error: str | None = None
    _marker_seen: float = 0.0
    _checked_at: float = 0.0
    _reloading: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._marker_seen = _mtime(self.rules_dir / RELOAD_MARKER)  # a reload asked before this start is done

    @property
    def catalog(self) -> Catalog:
        return self.active.catalog

    @property
    def services(self) -> dict[str, Service]:
        return self.active.services

    @property
    def mapping(self) -> Any:
        return self.active.mapping

    def service(self, service_id: str) -> Service:
        found = self.services.get(service_id)
        if found is None:
            raise not_found(f"No CDS service '{service_id}' here; GET /cds-services lists the services.")
        return found

    def reload_if_asked(self) -> None:
        """At most once a second, look at the reload marker; when it changed, load the rules anew.

        A set that fails to load is not activated: the last good set keeps answering, and the failure is kept
        for /readyz and logged. Requests in flight keep the set they started with."""
        now = time.monotonic()
        if now - self._checked_at < 1.0 or not self._reloading.acquire(blocking=False):
            return
        try:
            self._checked_at = now
            marker = _mtime(self.rules_dir / RELOAD_MARKER)
            if marker == self._marker_seen:
                return
            self._marker_seen = marker
            try:
                self.active = load_rules(self.rules_dir, self.engine)
                self.reload_error = None
                log.info("rules reloaded: %s", ", ".join(sorted(self.active.catalog.served_ids())))
            except Exception as exc:  # noqa: BLE001 - any failure keeps the last good set
                self.reload_error = f"{type(exc).__name__}: {exc}"
                log.error("rules reload refused, the last good set keeps serving: %s", self.reload_error)
        finally:
            self._reloading.release()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def create_app(config: dict | None = None) -> Flask:
    settings = {**DEFAULTS, **(config or {})}
    app = Flask(__name__)
    app.config.update({k: v for k, v in settings.items() if k != "CLOCK"})
    app.json.sort_keys = False

    store = Store(settings["DB_URL"])
    store.create_tables()
    authenticator = auth.load_authenticator(settings["AUTH_CONFIG"], store) if settings["AUTH_CONFIG"] else None
    rules_dir = Path(settings["RULES_DIR"])
    engine = Engine()
    state = Runtime(
        active=load_rules(rules_dir, engine),
        rules_dir=rules_dir,
        engine=engine,
        store=store,
        fetcher=Fetcher(float(settings["FHIR_TIMEOUT"])),
        clock=settings["CLOCK"],
        authenticated=authenticator is not None,
        fhir_servers=settings["FHIR_SERVERS"],
    )
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


def check_medications(rulesets: list[Ruleset], mapping: Any) -> None:
    """Every ruleset's medication concept must be one the site mapping knows, or order hooks cannot work."""
    for ruleset in rulesets:
        concept = ruleset.medication.get("concept")
        if concept not in mapping.medications:
            raise ValueError(f"{ruleset.ref}: medication concept '{concept}' is not in the site mapping "
                             f"({', '.join(sorted(mapping.medications))})")
