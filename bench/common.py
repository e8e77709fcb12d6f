"""What the bench sections share: paths, percentiles, worker RSS, request bodies, and the real server.

The server is started the way an operator starts it (`cdsrules serve`, default worker count) on loopback, with a
fresh SQLite store in a temporary folder. Request bodies carry full prefetch, so no FHIR fallback happens during a
measurement: built from the patient record the webhook tests use, or from a generated cohort (`cohort_bodies`).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
RESULTS = ROOT / "bench" / "results.json"
PATIENT = "p1"
COHORT_PATIENTS, COHORT_SEED = 24, 7  # one block of the generator's scenarios: every one at least once


# --- numbers ----------------------------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, int(round(fraction * len(sorted_values))) - 1))
    return sorted_values[rank]


def summarise_ms(latencies_s: list[float], elapsed_s: float) -> dict:
    """p50/p90/p99/max in milliseconds and requests per second."""
    values = sorted(latencies_s)
    ms = lambda v: round(v * 1000, 2)  # noqa: E731
    return {"requests": len(values), "rps": round(len(values) / elapsed_s, 1) if elapsed_s else 0.0,
            "p50_ms": ms(percentile(values, 0.50)), "p90_ms": ms(percentile(values, 0.90)),
            "p99_ms": ms(percentile(values, 0.99)), "max_ms": ms(values[-1]) if values else None}


def rss_kb(pid: int) -> int:
    """Resident set size of a process in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes, in seconds (Linux /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (the gunicorn workers of a master)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return sorted(found)


# --- request bodies ---------------------------------------------------------------------------


def templates() -> dict[str, str]:
    """The prefetch templates the services advertise (from the site mapping)."""
    from engine import fhir

    return fhir.prefetch_templates(fhir.load_site_mapping(RULES / "site" / "fhir-r4.yaml"))


def prefetch(resources: list[dict], patient: str = PATIENT) -> dict:
    """Each template answered from `resources`, as an EHR fills prefetch (every match, no `_count` cut)."""
    from tests.fhir_server import FhirData
    from tests.records import prefetch_for

    return prefetch_for(templates(), FhirData(resources), patient)


def record(today: dt.date, platelet_history: int = 2) -> list[dict]:
    """The webhook tests' patient (on hetrombopag, low platelets), with `platelet_history` platelet counts."""
    from tests.records import observation, patient_record

    resources = patient_record(today, PATIENT, platelets=40)
    extra = max(0, platelet_history - 2)  # patient_record has two
    for n in range(extra):
        when = today - dt.timedelta(days=16 + n)
        resources.append(observation(f"plt-h{n}", PATIENT, "777-3", when, 20 + n % 50, "10*9/L"))
    return resources


def draft_orders(today: dt.date, count: int = 1, patient: str = PATIENT) -> list[dict]:
    """One hetrombopag draft and `count - 1` drafts for other drugs (a full order basket)."""
    from tests.records import hetrombopag_order

    drafts = [hetrombopag_order("draft-1", patient, 5, "draft", today)]
    for n in range(count - 1):
        drafts.append({"resourceType": "MedicationRequest", "id": f"other-{n}", "status": "draft", "intent": "order",
                       "medicationCodeableConcept": {"text": f"Other medicine {n} 10 mg tablets"},
                       "subject": {"reference": f"Patient/{patient}"}, "authoredOn": today.isoformat(),
                       "dosageInstruction": [{"text": "10 mg orally once daily"}]})
    return drafts


def hook_body(hook: str, today: dt.date, platelet_history: int = 2, drafts: int = 1) -> dict:
    """A full CDS Hooks request for `hook`, prefetch filled."""
    return _request(hook, PATIENT, draft_orders(today, drafts), record(today, platelet_history))


def _request(hook: str, patient: str, drafts: list[dict], resources: list[dict]) -> dict:
    """A CDS Hooks request about `patient`: the drafts as draftOrders (order hooks), `resources` as prefetch."""
    context: dict = {"userId": "Practitioner/dr1", "patientId": patient}
    if hook != "patient-view":
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": d} for d in drafts]}
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context,
            "prefetch": prefetch(resources, patient)}


def cohort_bodies(hook: str, today: dt.date, patients: int = COHORT_PATIENTS) -> list[dict]:
    """Requests for `hook` about a generated cohort: each patient on each of the dates where a protocol decision
    changes (screening, start, titration reviews, stop, out of scope), the record as it stood that day, moved in
    time so that the day is `today` (the server evaluates on the real date)."""
    from engine.cohort import generate_cohort
    from engine.fhir import resources_as_of

    bodies = []
    for patient in generate_cohort(patients, COHORT_SEED):
        pid = next(r["id"] for r in patient.resources if r["resourceType"] == "Patient")
        for day in patient.evaluation_dates:
            resources = _moved(resources_as_of(patient.resources, day), today - day, pid)
            bodies.append(_request(hook, pid, draft_orders(today, 1, pid), resources))
    return bodies


_DAY = re.compile(r'"(\d{4}-\d{2}-\d{2})')


def _moved(resources: list[dict], by: dt.timedelta, pid: str) -> list[dict]:
    """Every date shifted by `by` (ages and intervals keep), and the links to the patient as an EHR's server
    writes them (the cohort's Bundles link by urn:uuid, as a transaction does)."""
    text = json.dumps(resources).replace(f'"urn:uuid:{pid}"', f'"Patient/{pid}"')
    return json.loads(_DAY.sub(lambda m: '"' + (dt.date.fromisoformat(m[1]) + by).isoformat(), text))


class RoundRobin:
    """Bodies sent in turn, each with a fresh hookInstance."""

    def __init__(self, bodies: list[dict]):
        self.templates = [BodyTemplate(b) for b in bodies]
        self.size = round(sum(t.size for t in self.templates) / len(self.templates))  # the mean
        self._next = 0

    def render(self) -> bytes:
        template = self.templates[self._next % len(self.templates)]
        self._next += 1
        return template.render()


class BodyTemplate:
    """A serialised request whose hookInstance is replaced per call, without serialising JSON again."""

    MARK = "00000000-0000-4000-8000-000000000000"

    def __init__(self, body: dict):
        encoded = json.dumps({**body, "hookInstance": self.MARK}).encode()
        self.head, self.tail = encoded.split(self.MARK.encode())
        self.size = len(encoded)

    def render(self) -> bytes:
        return self.head + str(uuid.uuid4()).encode() + self.tail


# --- the real server --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`cdsrules serve --no-auth` on a free loopback port with a fresh SQLite store (or CDSRULES_BENCH_DB, e.g. a
    PostgreSQL URL); a context manager."""

    def __init__(self, workers: int | None = None, extra_env: dict | None = None, db_url: str | None = None):
        self.workers = workers
        self.db_url = db_url or os.environ.get("CDSRULES_BENCH_DB")
        self.extra_env = extra_env or {}
        self.folder = Path(tempfile.mkdtemp(prefix="cdsrules-bench-"))
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log_path = self.folder / "server.log"

    def command(self) -> list[str]:
        script = Path(sys.executable).parent / "cdsrules"
        command = [str(script)] if script.exists() else [sys.executable, "-m", "cdsrules"]
        command += ["serve", "--no-auth", "--host", "127.0.0.1", "--port", str(self.port),
                    "--db", self.db_url or f"sqlite:///{self.folder / 'db.sqlite'}", "--rules", str(RULES)]
        if self.workers is not None:
            command += ["--workers", str(self.workers)]
        return command

    def __enter__(self) -> Server:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, **self.extra_env})
        self._wait_ready()
        return self

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        from webhook.server import default_workers

        expected = self.workers or default_workers()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/readyz", timeout=1) as response:
                    if response.status == 200 and len(self.worker_pids()) >= expected:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not become ready:\n{self.log()}")

    def worker_pids(self) -> list[int]:
        return children(self.process.pid)

    def worker_rss_kb(self) -> dict[int, int]:
        return {pid: rss_kb(pid) for pid in self.worker_pids()}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


# --- results ----------------------------------------------------------------------------------


def load_results() -> dict:
    try:
        return json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        return {}


def save_results(results: dict) -> None:
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
