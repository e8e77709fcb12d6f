"""The production server: the app factory under gunicorn, one engine per worker process.

durable-rules gains nothing from threads and must be called under one lock, so we scale by worker processes. The
app is not preloaded: each worker builds its own app (and engine) after the fork. A bad auth config, workbench
credential or store stops `serve` with a message before any worker starts. A rules problem never stops it: the
master checks the rules and keeps the set as the known-good one (webhook.known_good) that every worker, a
replacement too, starts from; with no good set, the workers come up answering 503 until `cdsrules reload` brings one.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from gunicorn.app.base import BaseApplication
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from store import DEFAULT_DB_URL, Store, StoreError
from webhook import metrics, privacy
from webhook.app import create_app
from webhook.auth import AuthConfigError, check_config
from webhook.hosts import host_name
from webhook.known_good import KnownGood, RulesRefused
from webhook.state import check_rules, reload_marker

NO_AUTH_WARNING = (
    "WARNING: authentication is OFF (--no-auth). Any caller can use this service and make it fetch from any "
    "fhirServer. Use this only on a development machine; in production pass --auth-config FILE.\n"
)


RETRY_PAUSE = 2.0  # seconds before a worker that cannot start exits


class _Gunicorn(BaseApplication):
    def __init__(self, app_config: dict, options: dict):
        self.app_config = app_config
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        """Runs in each worker, after the fork; our log lines go where gunicorn's go.

        An exception from here would end the worker with gunicorn's boot-error code, on which the master shuts
        the whole server down. So a worker that cannot build its app (a config file broken since the start, the
        store away) exits with code 1 after a pause instead, and the master starts another."""
        ours = logging.getLogger("webhook")
        ours.handlers = logging.getLogger("gunicorn.error").handlers
        for handler in ours.handlers:  # no request value in a log line can start a line of its own
            if not any(isinstance(f, privacy.EscapeControlCharacters) for f in handler.filters):
                handler.addFilter(privacy.EscapeControlCharacters())
        ours.setLevel(logging.INFO)
        ours.propagate = False
        try:
            return create_app(self.app_config)
        except Exception:  # noqa: BLE001 - whatever it is, the master must live on
            ours.exception("this worker cannot start; another is started in %g s", RETRY_PAUSE)
            time.sleep(RETRY_PAUSE)  # so that a lasting problem does not make the master spin
            sys.exit(1)


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


def check_configuration(rules_dir: str, db_url: str, auth_config: str | None, workbench: bool = False) -> str | None:
    """What would stop every worker from starting, as a message; None if all is well.

    Not the rules: a rules problem never stops the server (keep_rules_at_start)."""
    if not Path(rules_dir).is_dir():
        return f"--rules {rules_dir} is not a folder"
    if auth_config:
        try:
            check_config(auth_config)
        except AuthConfigError as error:
            return str(error)
    if workbench:
        from webhook.workbench.access import WorkbenchConfigError, policy_from

        try:
            policy_from(auth_config)
        except WorkbenchConfigError as error:
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


def check_allowed_hosts(names: list[str]) -> str | None:
    bad = [name for name in names if host_name(name) is None]
    return f"--allowed-host {bad[0]!r} is not a host name" if bad else None


def keep_rules_at_start(rules_dir: str, known_good: KnownGood) -> str | None:
    """Check the rules and keep them as the known-good set; what is wrong with them, as a message, or None."""
    try:
        catalog, _ = known_good.load_and_keep(Path(rules_dir), reload_marker(Path(rules_dir)), check_rules)
    except RulesRefused as refused:
        return f"the rules in {rules_dir} are refused:\n{refused}"
    if not catalog.served_ids():
        return f"no released ruleset under {rules_dir} (drafts are not served; see `cdsrules release`)"
    return None


def serve(rules_dir: str, host: str, port: int, db_url: str, workers: int | None, auth_config: str | None,
          workbench: bool = False, threads: int = 1, allowed_hosts: list[str] | None = None) -> int:
    """Run the service under gunicorn until stopped; the exit code."""
    if auth_config is None:
        sys.stderr.write(NO_AUTH_WARNING)
    problem = check_allowed_hosts(allowed_hosts or []) or check_configuration(rules_dir, db_url, auth_config, workbench)
    if problem:
        sys.stderr.write(f"cdsrules serve: {problem}\n")
        return 2
    known_good, master = KnownGood.create(), os.getpid()
    try:
        problem = keep_rules_at_start(rules_dir, known_good)
        if problem:
            sys.stderr.write(f"cdsrules serve: {problem}\nServing no rules (503, /readyz says why) until a good set "
                             f"is in place and `cdsrules reload --rules {rules_dir}` is run.\n")
        app_config = {"RULES_DIR": rules_dir, "DB_URL": db_url, "AUTH_CONFIG": auth_config,
                      "KNOWN_GOOD_DIR": str(known_good.root), "ALLOWED_HOSTS": tuple(allowed_hosts or ())}
        if workbench:
            app_config["WORKBENCH"] = True
        options = {**gunicorn_options(host, port, workers or default_workers(), threads),
                   **metrics.gunicorn_hooks()}  # multiprocess /metrics
        privacy.ensure_key()  # one log pseudonym key for all workers
        _Gunicorn(app_config, options).run()
    finally:
        if os.getpid() == master:  # a worker leaves through here too (gunicorn forks inside run())
            known_good.remove()
    return 0


WORKBENCH_THREADS = 2  # per worker with --workbench: one may wait on a draft, one answers the EHR


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `cdsrules serve`, which `python -m webhook.server` takes too: one set, not two."""
    parser.add_argument("--rules", default="rules", metavar="DIR")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--db", default=DEFAULT_DB_URL, metavar="URL")
    parser.add_argument("--workers", type=int, default=None, help="gunicorn worker processes (default: two per core)")
    parser.add_argument("--threads", type=int, default=1,
                        help=f"threads per worker (default 1, at least {WORKBENCH_THREADS} with --workbench); more "
                             "overlap calls that wait on FHIR fallback fetches")
    parser.add_argument("--workbench", action="store_true", help="serve the pharmacist workbench")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="a host name callers may use besides localhost (repeatable; DNS rebinding protection)")
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument("--no-auth", action="store_true", help="development only: accept calls without a JWT")
    auth.add_argument("--auth-config", metavar="FILE", help="YAML: base_url and trusted issuers")


def serve_command(args: argparse.Namespace) -> int:
    """Serve with the parsed options of add_serve_arguments; 2 when no authentication choice was made."""
    if not (args.no_auth or args.auth_config):
        print("error: choose --auth-config FILE, or --no-auth for development on this machine only",
              file=sys.stderr)
        return 2
    threads = max(args.threads, WORKBENCH_THREADS) if args.workbench else args.threads
    return serve(rules_dir=args.rules, host=args.host, port=args.port, db_url=args.db, workers=args.workers,
                 auth_config=None if args.no_auth else args.auth_config, workbench=args.workbench,
                 threads=threads, allowed_hosts=args.allowed_host)


def main(argv: list[str] | None = None) -> int:
    """`python -m webhook.server [OPTIONS]` is `cdsrules serve [OPTIONS]`, for hosts that run modules, not scripts."""
    parser = argparse.ArgumentParser(prog="cdsrules serve", description="serve the rules as CDS Hooks services")
    add_serve_arguments(parser)
    return serve_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
