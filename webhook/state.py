"""The rules a process serves: the released rulesets and the site mapping, loaded, checked and compiled once per
process, and reloaded when `cdsrules reload` asks.

Under gunicorn this runs in each worker after the fork (the app is not preloaded), which is where the engine must
live. Drafts (versions not in a ruleset's releases.yaml) are never served. A worker loads the last good set
(webhook.known_good), and a rules problem never stops it: with no good set at all it answers 503 and /readyz says
why.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine import fhir
from engine.loader import SITE_MAPPING
from engine.model import Ruleset
from engine.runtime import Engine
from engine.versions import RELOAD_MARKER, Catalog, load_catalog
from store import Store
from webhook.known_good import KnownGood, RulesRefused, describe
from webhook.outcome import HookError, not_found
from webhook.prefetch import Fetcher
from webhook.services import Service, build_services, released_rulesets

NOTHING_LOADED = -1.0  # as the reload marker seen: differs from any marker, so the first check loads the folder
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActiveRules:
    """One validated, compiled set of released rules; swapped whole on reload, never edited."""

    catalog: Catalog  # released versions; the one in effect on a call's date answers it
    services: dict[str, Service]
    mapping: fhir.SiteMapping
    loaded_at: str


def check_rules(rules_dir: Path) -> tuple[Catalog, fhir.SiteMapping]:
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
                       dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))


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
    def mapping(self) -> fhir.SiteMapping:
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


def check_medications(rulesets: list[Ruleset], mapping: fhir.SiteMapping) -> None:
    """Every ruleset's medication concept must be one the site mapping knows, or order hooks cannot work."""
    for ruleset in rulesets:
        concept = ruleset.medication.concept if ruleset.medication else None
        if concept not in mapping.medications:
            raise ValueError(f"{ruleset.ref}: medication concept '{concept}' is not in the site mapping "
                             f"({', '.join(sorted(mapping.medications))})")
