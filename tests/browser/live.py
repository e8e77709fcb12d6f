"""The real server for the browser tests: `cdsrules serve --no-auth --workbench` under gunicorn on a free loopback
port, with a store seeded with audit records and feedback, and Debian's Chromium driven by playwright."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "test-output" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def workbench_wired() -> bool:
    """Whether create_app mounts the workbench itself when asked (`serve --workbench`)."""
    return "register_workbench" in (REPO / "webhook" / "app.py").read_text(encoding="utf-8")


def server_command(rules: Path, port: int, db_url: str) -> list[str]:
    if workbench_wired():
        script = Path(sys.executable).parent / "cdsrules"
        cli = [str(script)] if script.exists() else [sys.executable, "-m", "cdsrules"]
        return cli + ["serve", "--rules", str(rules), "--host", "127.0.0.1", "--port", str(port), "--no-auth",
                      "--workbench", "--db", db_url, "--workers", "1"]
    return [sys.executable, "-m", "tests.browser.serve_workbench", "--rules", str(rules), "--port", str(port),
            "--db", db_url]


def server_env() -> dict[str, str]:
    """This checkout's sources first, so the server runs them even when the virtualenv's editable install points to
    another checkout of the project."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}


def start_server(rules: Path, port: int, db_url: str, log_path: Path, timeout: float = 30) -> Server:
    return launch(server_command(rules, port, db_url), port, log_path, "/workbench/", timeout)


def launch(command: list[str], port: int, log_path: Path, ready: str = "/readyz", timeout: float = 30) -> Server:
    """Start the server `command` runs on `port` and wait until `ready` answers 200; stopped if it never does."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=server_env())
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{server.log()}")
        try:
            if requests.get(server.base_url + ready, timeout=1).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"the server did not answer within {timeout} s:\n{server.log()}")


def seed_store(db_url: str) -> None:
    """Cards shown by the service and what prescribers did with them, for the Alert outcomes page."""
    from store import AuditRecord, Store

    store = Store(db_url)
    (store.migrate if hasattr(store, "migrate") else store.create_tables)()
    plan = [("titration-maintain", "overridden", "clinical-judgment", "Clinical judgment")] * 5 + [
        ("titration-maintain", "accepted", None, None), ("titration-increase", "accepted", None, None),
        ("titration-increase", "accepted", None, None), ("titration-increase", "overridden", "newer-result-available",
                                                         "A newer result is available"),
        ("start-dose", "accepted", None, None), ("start-dose", None, None, None), ("stop-platelets", "accepted", None,
                                                                                   None)]
    for index, (topic, outcome, code, display) in enumerate(plan):
        card = f"seed-card-{index}"
        store.add_audit(AuditRecord(
            decision_id=f"seed-decision-{index}", hook_instance=f"seed-hook-{index}",
            service="hetrombopag-patient-view", hook="patient-view", patient_id=f"synthetic-{index}",
            ruleset="hetrombopag", version="1.0.0", fired_rules=[topic], latency_ms=8.0,
            cards=[{"uuid": card, "topic": topic, "rule_id": topic}]))
        if outcome:
            item = {"card": card, "outcome": outcome, "outcomeTimestamp": f"2026-03-19T10:{index:02d}:00Z"}
            if code:
                item["overrideReason"] = {"reason": {"code": code, "display": display},
                                          "userComment": "platelets already rising" if index == 0 else ""}
            store.add_feedback("hetrombopag-patient-view", item)
