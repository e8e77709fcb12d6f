"""The production server: the app factory under gunicorn, one engine per worker process.

durable-rules gains nothing from threads and must be called under one lock, so we scale by worker processes. The
app is not preloaded: each worker builds its own app (and engine) after the fork. Everything that can be wrong with
the configuration is checked in the master first, so a bad ruleset stops `serve` with a message instead of a
crash-looping worker pool.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from gunicorn.app.base import BaseApplication
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from engine import fhir
from engine.errors import RulesetErrors
from engine.versions import load_catalog
from webhook import SITE_MAPPING, check_medications, create_app
from webhook import metrics, privacy
from webhook.auth import AuthConfigError, read_config
from webhook.services import released_rulesets
from webhook.store import Store, StoreError

NO_AUTH_WARNING = (
    "WARNING: authentication is OFF (--no-auth). Any caller can use this service and make it fetch from any "
    "fhirServer. Use this only on a development machine; in production pass --auth-config FILE.\n"
)


class _Gunicorn(BaseApplication):
    def __init__(self, app_config: dict, options: dict):
        self.app_config = app_config
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        """Runs in each worker, after the fork; our log lines go where gunicorn's go."""
        ours = logging.getLogger("webhook")
        ours.handlers = logging.getLogger("gunicorn.error").handlers
        ours.setLevel(logging.INFO)
        ours.propagate = False
        return create_app(self.app_config)


HEARTBEAT_DIR = "/dev/shm"


def default_workers() -> int:
    """Two worker processes per core this process may run on.

    A call is CPU work under one process-wide engine lock, so processes, not threads, give throughput. Twice the
    cores, because an EHR's keep-alive connections stay with the worker that accepted them: with one worker per
    core, an unlucky spread of connections leaves one core idle while the other queues (measured: p99 and
    throughput varied by a factor of two from run to run at 10 clients on 2 cores)."""
    return 2 * len(os.sched_getaffinity(0))


def gunicorn_options(host: str, port: int, workers: int, threads: int = 1) -> dict:
    return {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": max(1, workers),
        # gthread, handed only whole requests (a slow client cannot hold a thread), keeps connections alive. One
        # thread per worker by default: more threads only contend for the GIL (measured: 10-15% more CPU per call);
        # they help where calls wait on FHIR fallback fetches (--threads).
        "worker_class": "webhook.worker.RequestBufferingWorker",
        "threads": max(1, threads),
        "http_parser": "python",  # the one the worker frames requests with
        "preload_app": False,
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
        # Each worker touches a heartbeat file on every loop; on a disk-backed /tmp that touch can wait behind the
        # journal while the store fsyncs (gunicorn's docs advise memory-backed storage).
        "worker_tmp_dir": HEARTBEAT_DIR if os.access(HEARTBEAT_DIR, os.W_OK) else None,  # else the default tmp
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "cdsrules",
        "control_socket_disable": True,  # one fixed socket path per user would clash between servers
    }


def check_configuration(rules_dir: str, db_url: str, auth_config: str | None) -> str | None:
    """What would stop every worker from starting, as a message; None if all is well."""
    try:
        rulesets = released_rulesets(load_catalog(rules_dir))
        check_medications(rulesets, fhir.load_site_mapping(Path(rules_dir) / SITE_MAPPING))
    except (RulesetErrors, fhir.MappingError) as error:
        return f"the rules in {rules_dir} are invalid:\n{error}"
    except (OSError, ValueError) as error:
        return f"cannot load the rules in {rules_dir}: {error}"
    if not rulesets:
        return f"no released ruleset under {rules_dir} (drafts are not served; see `cdsrules release`)"
    if auth_config:
        try:
            read_config(auth_config)
        except AuthConfigError as error:
            return str(error)
    # The schema is created or upgraded here, once, before any worker starts (workers migrate again on start,
    # which is then a no-op); the master's connections are closed so that no forked worker inherits one.
    store = Store(db_url)
    try:
        store.migrate()
    except (SQLAlchemyError, StoreError) as error:
        return f"the store {make_url(db_url).render_as_string(hide_password=True)} cannot be used: {error}"
    finally:
        store.engine.dispose()
    return None


def serve(rules_dir: str, host: str, port: int, db_url: str, workers: int | None, auth_config: str | None,
          workbench: bool = False, threads: int = 1) -> int:
    """Run the service under gunicorn until stopped; the exit code."""
    if auth_config is None:
        sys.stderr.write(NO_AUTH_WARNING)
    problem = check_configuration(rules_dir, db_url, auth_config)
    if problem:
        sys.stderr.write(f"cdsrules serve: {problem}\n")
        return 2
    app_config = {"RULES_DIR": rules_dir, "DB_URL": db_url, "AUTH_CONFIG": auth_config}
    if workbench:
        app_config["WORKBENCH"] = True
    options = {**gunicorn_options(host, port, workers or default_workers(), threads),
               **metrics.gunicorn_hooks()}  # multiprocess /metrics
    privacy.ensure_key()  # one log pseudonym key for all workers
    _Gunicorn(app_config, options).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m webhook.server [OPTIONS]` is `cdsrules serve [OPTIONS]`, for hosts that run modules, not scripts."""
    from engine.cli import main as cdsrules

    return cdsrules(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
