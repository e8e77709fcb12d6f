"""Fixtures for the webhook tests: app factory instances, a loopback FHIR server, signing keys and a live
gunicorn server started the way an operator starts it (`cdsrules serve`)."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import jwt
import pytest
import requests
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import settings

from tests.fhir_server import FhirServer

# The record builders live in tests/records.py (the benchmarks use them too); tests import them from here.
from tests.records import hetrombopag_order, observation, order_sign_request, patient_record, prefetch_for  # noqa: F401

# The suite is reproducible: generated examples are the same every run, so CI never fails by the luck of a draw.
# `make soak` (HYPOTHESIS_PROFILE=explore) draws fresh examples to find what the fixed ones miss.
settings.register_profile("repeatable", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

pytest_plugins = ["tests.store_backends"]  # the store_url fixtures: each test on SQLite and PostgreSQL

REPO = Path(__file__).resolve().parent.parent
RULES_DIR = REPO / "rules"
EXTERNAL = REPO / "tests" / "fixtures" / "external"  # real clients' payloads, copied in with SOURCES.md
TODAY = dt.date(2026, 6, 2)  # the evaluation date the webhook tests run on (CLOCK)
ISSUER = "https://ehr.test.example"
TOKEN = "fhir-access-token-7c1d9e"  # the FHIR bearer token tests send; must never show up in a log


@pytest.fixture(scope="session")
def fhir_server():
    server = FhirServer().start()
    yield server
    server.stop()


@pytest.fixture
def fhir(fhir_server):
    fhir_server.reset([])
    return fhir_server


def build_app(directory: Path, fhir_server: FhirServer, **overrides):
    """An app with the real rules, a fresh SQLite file and only the loopback FHIR server allowed."""
    from webhook import create_app

    config = {
        "RULES_DIR": str(RULES_DIR),
        "DB_URL": f"sqlite:///{directory / 'cds.db'}",
        "FHIR_SERVERS": [fhir_server.url],
        "FHIR_TIMEOUT": 2.0,
        "CLOCK": lambda: TODAY,
    }
    config.update(overrides)
    return create_app(config)


@pytest.fixture
def make_app(tmp_path, fhir_server):
    """For tests that need their own configuration or store (building an app takes a second or two)."""
    return lambda **overrides: build_app(tmp_path, fhir_server, **overrides)


@pytest.fixture(scope="session")
def app(tmp_path_factory, fhir_server):
    """One app for the session: tests tell their records apart by hookInstance and card uuid."""
    return build_app(tmp_path_factory.mktemp("app"), fhir_server)


@pytest.fixture
def client(app):
    return app.test_client()


# --- JWT ------------------------------------------------------------------------------------


class Signer:
    """An EHR's signing key, its JWKS, and tokens as a CDS client mints them."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP384R1())
        self.kid = "test-key-1"

    def jwks(self) -> dict:
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "alg": "ES384", "use": "sig"}]}

    def token(self, aud: str, **claims) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()), **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, self.key, algorithm="ES384", headers={"kid": self.kid, "typ": "JWT"})


@pytest.fixture(scope="session")
def signer():
    return Signer()


def write_auth_config(directory: Path, signer: Signer, base_url: str, fhir_servers: list[str], **issuer) -> Path:
    (directory / "ehr.jwks.json").write_text(json.dumps(signer.jwks()))
    config = {"base_url": base_url,
              "issuers": [{"iss": ISSUER, "jwks_file": "ehr.jwks.json", "fhir_servers": fhir_servers, **issuer}]}
    path = directory / "auth.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# --- live server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cdsrules_command() -> list[str]:
    script = Path(sys.executable).parent / "cdsrules"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cdsrules"]


class LiveServer:
    def __init__(self, base_url: str, process: subprocess.Popen, log_path: Path, db_path: Path):
        self.base_url = base_url
        self.process = process
        self.log_path = log_path
        self.db_path = db_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running_server(directory: Path, *arguments: str, env: dict | None = None, db_path: Path | None = None,
                   port: int | None = None, ready: str = "/readyz"):
    """`cdsrules serve ARGUMENTS` on a loopback port, ready, and stopped afterwards: as an operator starts it.

    Ready: `ready` answers 200 (/healthz for a server that is up but not ready)."""
    port = port or free_port()
    db_path = db_path or directory / "var" / "cds.db"
    log_path = directory / "server.log"
    command = cdsrules_command() + ["serve", "--host", "127.0.0.1", "--port", str(port), *arguments]
    if "--db" not in arguments:
        command += ["--db", f"sqlite:///{db_path}"]
    if "--rules" not in arguments:
        command += ["--rules", str(RULES_DIR)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path, db_path)
    try:
        _wait_ready(server, ready)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory, signer, fhir_server):
    """`cdsrules serve` under gunicorn with two workers and JWT auth, on a free loopback port."""
    directory = tmp_path_factory.mktemp("live")
    port = free_port()  # first: the auth config names the base URL that tokens' aud must match
    auth = write_auth_config(directory, signer, f"http://127.0.0.1:{port}", [fhir_server.url])
    with running_server(directory, "--workers", "2", "--auth-config", str(auth), port=port) as server:
        yield server


@pytest.fixture(scope="session")
def plain_server(tmp_path_factory):
    """`cdsrules serve --no-auth` on the shipped rules with its default workers, shared by the modules that only call
    it: they tell their records apart by hookInstance and card uuid, and none changes its rules, files or workers.
    (Starting one takes seconds of both cores; a module that needs a fresh or differently configured server starts
    its own with running_server.)"""
    with running_server(tmp_path_factory.mktemp("plain"), "--no-auth") as server:
        yield server


def _wait_ready(server: LiveServer, path: str = "/readyz", timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if requests.get(f"{server.base_url}{path}", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)  # a refused connection costs nothing; the sooner it answers, the sooner a test goes on
    raise RuntimeError(f"the server did not become ready:\n{server.log()}")


# --- every log line of the suite, kept for the secrets check (tests/test_zz_no_secrets.py) ---------


@pytest.fixture(scope="session", autouse=True)
def suite_log(tmp_path_factory):
    """All in-process log records at DEBUG into one file beside the live servers' logs."""
    import logging

    path = tmp_path_factory.getbasetemp() / "in-process.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield path
    root.removeHandler(handler)
    root.setLevel(previous)
    handler.close()


def pytest_sessionfinish(session, exitstatus):
    """Under pytest-xdist (`-n 2`) each worker writes under a folder of its own, and test_zz_no_secrets, run by one
    worker, sees only that worker's files, perhaps before the other is done. So the controller, once every worker
    has finished, checks the files of them all; without xdist the test alone checks everything."""
    config = session.config
    if hasattr(config, "workerinput") or getattr(config.option, "dist", "no") == "no":
        return  # a worker, or no workers at all
    from tests.token_leaks import leaks, written_files

    base = config._tmp_path_factory.getbasetemp()  # the workers' folders are under it (basetemp/popen-gwN)
    found = leaks(written_files(base), base, TOKEN)
    if found:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            "a token was written to: " + ", ".join(found), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
