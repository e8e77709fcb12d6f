"""The CDS Hooks service: `create_app(config)` builds a Flask app from a configuration.

Released rulesets and the site mapping are loaded and compiled here, once per process: under gunicorn that is in
each worker after the fork (the app is not preloaded), which is where the engine must live. Drafts (versions not
in a ruleset's releases.yaml) are never served. A worker loads the last good set (webhook.known_good), and a
rules problem never stops it: with no good set at all it answers 503 and /readyz says why.

Config keys: RULES_DIR (default "rules"), DB_URL (default store.DEFAULT_DB_URL), AUTH_CONFIG (a path, or
None for no authentication), MAX_CONTENT_LENGTH (bytes, default 5 MiB), FHIR_TIMEOUT (seconds, default 3),
FHIR_SERVERS (without auth: the fhirServer URLs we may fetch from; None = any), CLOCK (a callable returning
today's date; default `datetime.date.today`), WORKBENCH (serve the pharmacist workbench under /workbench/),
ALLOWED_HOSTS (host names answered besides loopback's; see webhook/hosts.py), KNOWN_GOOD_DIR (set by
`cdsrules serve`: where the last good rule set is kept for the workers; None = load the rules folder itself).
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
from store import DEFAULT_DB_URL, Store
from webhook import auth, feedback, health, hooks, hosts, openapi, outcome
from webhook.known_good import KnownGood, RulesRefused, describe
from webhook.metrics import register_metrics
from webhook.outcome import HookError, not_found
from webhook.prefetch import Fetcher
from webhook.services import Service, build_services, released_rulesets

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
SITE_MAPPING = Path("site") / "fhir-r4.yaml"
NOTHING_LOADED = -1.0  # as the reload marker seen: differs from any marker, so the first check loads the folder
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActiveRules:
    """One validated, compiled set of released rules; swapped whole on reload, never edited."""

    catalog: Catalog  # released versions; the one in effect on a call's date answers it
    services: dict[str, Service]
    mapping: Any  # the site mapping, as engine.fhir loads it
    loaded_at: str


def check_rules(rules_dir: Path) -> tuple[Catalog, Any]:
    """Load and verify the catalog and the site mapping; raises (RulesetErrors, MappingError, ValueError) if any
    part is wrong. Compiles nothing: the master checks with this before any worker (and engine) exists."""
    mapping = fhir.load_site_mapping(rules_dir / SITE_MAPPING)
    catalog = load_catalog(rules_dir)
    check_medications(released_rulesets(catalog), mapping)
    return catalog, mapping


def load_rules(rules_dir: Path, engine: Engine) -> ActiveRules:
    """Load, verify and compile everything; raises as check_rules does."""
    catalog, mapping = check_rules(rules_dir)
    for ruleset in released_rulesets(catalog):
        engine.register(ruleset)  # compile every released version now, not on the first request
    return ActiveRules(catalog, build_services(catalog, fhir.prefetch_templates(mapping)), mapping,
                       dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


@dataclass
class Runtime:
    """What a request needs, built once per process."""

    rules_dir: Path
    known_good: KnownGood
    engine: Engine
    store: Store
    fetcher: Fetcher
    clock: Callable[[], dt.date]
    authenticated: bool
    fhir_servers: list[str] | None
    active: ActiveRules | None = None  # None while no good set has loaded: calls get 503
    reload_error: str | None = None  # why the last load was refused (or why nothing is loaded)
    _marker_seen: float = NOTHING_LOADED
    _checked_at: float = 0.0
    _reloading: threading.Lock = field(default_factory=threading.Lock)

    def load_at_start(self) -> None:
        """The known-good set, then the rules folder if a reload was asked since that set was kept (or none is).

        Never raises: a worker that cannot load any good set stays up, answering 503, so that a rules problem
        can never make gunicorn's master give up on its workers."""
        try:
            last = self.known_good.load_last(self._load)
        except Exception as error:  # noqa: BLE001 - then the rules folder, checked as ever
            log.error("the known-good rule set does not load, trying the rules folder: %s", describe(error))
            last = None
        if last is not None:
            self.active, self._marker_seen = last
            log.info("rules loaded from the last good set: %s", ", ".join(self.active.catalog.served_ids()))
        self.reload_if_asked()

    def require_rules(self) -> ActiveRules:
        """The active set; while there is none, every call that needs one is answered 503."""
        if self.active is None:
            raise HookError(503, "No rule set is loaded; /readyz says why.")
        return self.active

    @property
    def catalog(self) -> Catalog:
        return self.require_rules().catalog

    @property
    def services(self) -> dict[str, Service]:
        return self.active.services if self.active else {}

    @property
    def mapping(self) -> Any:
        return self.require_rules().mapping

    def service(self, service_id: str) -> Service:
        found = self.require_rules().services.get(service_id)
        if found is None:
            raise not_found(f"No CDS service '{service_id}' here; GET /cds-services lists the services.")
        return found

    def reload_if_asked(self) -> None:
        """At most once a second, look at the reload marker; when it changed, load the rules anew.

        A set that fails to load is not activated: the last good set keeps answering, and the failure is kept
        for /readyz and logged. A set that loads is kept for the workers started later. Requests in flight keep
        the set they started with."""
        now = time.monotonic()
        if now - self._checked_at < 1.0 or not self._reloading.acquire(blocking=False):
            return
        try:
            self._checked_at = now
            marker = reload_marker(self.rules_dir)
            if marker == self._marker_seen:
                return
            self._marker_seen = marker
            try:
                self.active = self.known_good.load_and_keep(self.rules_dir, marker, self._load)
                self.reload_error = None
                log.info("rules loaded: %s", ", ".join(sorted(self.active.catalog.served_ids())))
            except RulesRefused as refused:
                self.reload_error = str(refused)
                log.error("rules reload refused, %s: %s", "the last good set keeps serving" if self.active else
                          "no rule set is loaded (503) until a good one is", self.reload_error)
        finally:
            self._reloading.release()

    def _load(self, folder: Path) -> ActiveRules:
        return load_rules(folder, self.engine)


def reload_marker(rules_dir: Path) -> float:
    """When `cdsrules reload` last asked for a reload (the marker's mtime); 0.0 if never."""
    try:
        return (rules_dir / RELOAD_MARKER).stat().st_mtime
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


def check_medications(rulesets: list[Ruleset], mapping: Any) -> None:
    """Every ruleset's medication concept must be one the site mapping knows, or order hooks cannot work."""
    for ruleset in rulesets:
        concept = ruleset.medication.concept if ruleset.medication else None
        if concept not in mapping.medications:
            raise ValueError(f"{ruleset.ref}: medication concept '{concept}' is not in the site mapping "
                             f"({', '.join(sorted(mapping.medications))})")
