"""Prometheus `/metrics`: request latency per service, decisions by topic and ruleset version, reload status, and
audit writes that failed (which /readyz reports too, summed over the workers).

Correct with several gunicorn workers: `cdsrules serve` sets PROMETHEUS_MULTIPROC_DIR in the master before any
worker starts (`gunicorn_hooks`), every worker writes its samples to files there, and a scrape, whichever worker
answers it, adds up the files of all of them (prometheus-client's multiprocess mode). A worker that dies is marked
dead by the master's `child_exit` hook, so its gauges drop out while its counts stay in the totals.

Without that variable (tests, `create_app` in one process) the metrics live in a registry of this process.
prometheus-client picks its storage when it is first imported, so it is imported here only when an app is built:
in a worker, after the fork, with the variable already set.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds; the hook services aim to answer well inside 20 ms, the CDS Hooks budget is about 500 ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

bp = Blueprint("metrics", __name__)


def _multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class _Metrics:
    """The metric objects of this process (one set, whatever the number of apps built in it)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

        if _multiprocess() and values.ValueClass is values.MutexValue:
            # prometheus-client was imported before the directory was set (e.g. in the master): store in files.
            values.ValueClass = values.get_value_class()
        # In multiprocess mode the samples go to files and a scrape reads them; registering would only duplicate.
        self.registry = None if _multiprocess() else CollectorRegistry()
        registry = self.registry
        self.latency = Histogram(
            "cdsrules_request_duration_seconds", "Time to answer a request, by endpoint and CDS service.",
            ["endpoint", "service"], buckets=LATENCY_BUCKETS, registry=registry)
        self.requests = Counter(
            "cdsrules_requests", "Requests answered, by endpoint, CDS service and HTTP status.",
            ["endpoint", "service", "status"], registry=registry)
        self.evaluations = Counter(
            "cdsrules_evaluations", "Hook calls answered, by service and the ruleset version in effect.",
            ["service", "ruleset", "version"], registry=registry)
        self.decisions = Counter(
            "cdsrules_decisions", "Cards returned, by service, ruleset version and decision topic.",
            ["service", "ruleset", "version", "topic"], registry=registry)
        self.reload_failed = Gauge(
            "cdsrules_rules_reload_failed", "1 while a worker's last reload was refused (the last good set serves).",
            registry=registry, multiprocess_mode="livemax")
        self.loaded_at = Gauge(
            "cdsrules_rules_loaded_timestamp_seconds", "When the oldest live worker's active rule set was loaded.",
            registry=registry, multiprocess_mode="livemin")
        self.released = Gauge(
            "cdsrules_ruleset_version_loaded", "1 for each released ruleset version the workers serve.",
            ["ruleset", "version"], registry=registry, multiprocess_mode="livemax")
        self.reloads = Counter(
            "cdsrules_rules_reloads", "Reloads of the rule set seen by the workers, by result (ok, refused).",
            ["result"], registry=registry)
        self.audit_failures = Counter(
            "cdsrules_audit_failures", "Hook calls whose audit record could not be written (answered 503).",
            registry=registry)
        self._seen_active: Any = None
        self._seen_error: str | None = None
        self._lock = threading.Lock()

    def observe_rules(self, state: Any) -> None:
        """Update the reload gauges when the worker's active set or its reload error changed (cheap otherwise)."""
        active, error = state.active, state.reload_error
        if active is self._seen_active and error == self._seen_error:
            return
        with self._lock:
            if self._seen_active is not None and active is not self._seen_active:
                self.reloads.labels("ok").inc()
            if error and error != self._seen_error:
                self.reloads.labels("refused").inc()
            if active is not self._seen_active:
                self._set_released(self._seen_active, 0)
                self._set_released(active, 1)
                if active is not None:  # None: no good set loaded in this worker
                    self.loaded_at.set(_timestamp(active.loaded_at))
            self.reload_failed.set(1 if error else 0)
            self._seen_active, self._seen_error = active, error

    def _set_released(self, active: Any, value: int) -> None:
        if active is None:
            return
        for ruleset_id, versions in active.catalog.rulesets.items():
            for version in versions.releases:
                self.released.labels(ruleset_id, version).set(value)


_METRICS: _Metrics | None = None
_CREATE = threading.Lock()


def _metrics() -> _Metrics:
    global _METRICS
    if _METRICS is None:
        with _CREATE:
            if _METRICS is None:
                _METRICS = _Metrics()
    return _METRICS


def _timestamp(iso: str) -> float:
    try:
        return dt.datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return time.time()


# --- the Flask side --------------------------------------------------------------------------


def register_metrics(app: Flask) -> None:
    """Serve /metrics and time every request of `app`; call after the runtime is in app.extensions."""
    metrics = _metrics()
    app.before_request(_start_timer)
    app.after_request(_observe)
    app.register_blueprint(bp)
    state = app.extensions.get("cdsrules")
    if state is not None:
        metrics.observe_rules(state)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    endpoint, service = _labels()
    metrics = _metrics()
    if started is not None:
        metrics.latency.labels(endpoint, service).observe(time.perf_counter() - started)
    metrics.requests.labels(endpoint, service, str(response.status_code)).inc()
    state = current_app.extensions.get("cdsrules")
    if state is not None:
        metrics.observe_rules(state)
    return response


def _labels() -> tuple[str, str]:
    """Bounded label values: the Flask endpoint, and the service id only when it is one we serve."""
    endpoint = request.endpoint or "unmatched"
    service_id = (request.view_args or {}).get("service_id")
    state = current_app.extensions.get("cdsrules")
    if service_id is None or state is None or service_id not in state.services:
        return endpoint, ""
    return endpoint, service_id


def record_decisions(service_id: str, ruleset_ref: str | None, topics: Iterable[str]) -> None:
    """Count one answered hook call and its cards' topics under the ruleset version that decided them.

    `ruleset_ref` is `id@version` (Ruleset.ref), or None when no version was in effect."""
    ruleset, _, version = (ruleset_ref or "none@none").partition("@")
    metrics = _metrics()
    metrics.evaluations.labels(service_id, ruleset, version).inc()
    for topic in topics:
        metrics.decisions.labels(service_id, ruleset, version, topic).inc()


def count_audit_failure() -> None:
    _metrics().audit_failures.inc()


def audit_failures() -> int:
    """Audit writes that failed since the server started, in all its workers: the same whichever worker asks."""
    metrics = _metrics()
    if metrics.registry is not None:
        return int(metrics.registry.get_sample_value("cdsrules_audit_failures_total") or 0)
    from prometheus_client import multiprocess

    counters = [str(f) for f in Path(os.environ[MULTIPROC_ENV]).glob("counter_*.db")]
    return int(sum(sample.value for family in multiprocess.MultiProcessCollector.merge(counters)
                   for sample in family.samples if sample.name == "cdsrules_audit_failures_total"))


@bp.get("/metrics")
def scrape() -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = _metrics().registry
    if registry is None:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


# --- the gunicorn side (the master) ----------------------------------------------------------


def gunicorn_hooks() -> dict:
    """Set up multiprocess mode before the workers start; gunicorn settings to add to the server's options.

    An operator's PROMETHEUS_MULTIPROC_DIR is used as given (emptied of a previous run's files); without one, a
    private temporary directory is made, and removed when the master exits."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        made = None
    else:
        folder = made = Path(tempfile.mkdtemp(prefix="cdsrules-metrics-"))
        os.environ[MULTIPROC_ENV] = str(folder)

    def child_exit(_server, worker) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, str(folder))

    def on_exit(_server) -> None:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)

    return {"child_exit": child_exit, "on_exit": on_exit}
