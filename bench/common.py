"""What the bench sections share: paths, percentiles, worker RSS, request bodies, and the real server.

The server is started the way an operator starts it (`cdsrules serve`, default worker count) on loopback, with a
fresh SQLite store in a temporary folder. Request bodies carry full prefetch, so no FHIR fallback happens during a
measurement: built from a ruleset's generated cohort (`bench.protocols`), all of it (`cohort_bodies`) or its typical
patient (`hook_body`).
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
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
RESULTS = ROOT / "bench" / "results.json"
PATIENT = "p1"


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


@lru_cache(maxsize=1)
def templates() -> dict[str, str]:
    """The prefetch templates the services advertise (from the site mapping, read and validated once: a cohort's
    bodies would otherwise validate it once each)."""
    from engine import fhir

    return fhir.prefetch_templates(fhir.load_site_mapping(RULES / "site" / "fhir-r4.yaml"))


def prefetch(resources: list[dict], patient: str = PATIENT) -> dict:
    """Each template answered from `resources`, as an EHR fills prefetch (every match, no `_count` cut)."""
    from tests.fhir_server import FhirData
    from tests.records import prefetch_for

    return prefetch_for(templates(), FhirData(resources), patient)


def draft_orders(ruleset_id: str, today: dt.date, count: int = 1, patient: str = PATIENT) -> list[dict]:
    """One draft of the protocol's drug and `count - 1` drafts for other drugs (a full order basket). The draft is
    written as the cohort's orders are (the scenario file's text, the ruleset's medication) at the highest start
    dose of the ruleset's table (or its start-dose parameter), so patients whom a lower dose fits see the
    mismatch."""
    from bench.protocols import protocol

    chosen = protocol(ruleset_id)
    medication, written = chosen.medication, chosen.scenarios.data["orders"]
    clinician = chosen.clinician  # a start-dose table by weight, or one start-dose parameter
    dose = max((d for _, d in clinician.start_doses), default=None) or clinician.start_dose(None)
    shown = f"{dose:g}"
    instruction: dict = {"text": written["instruction"].format(dose=shown, unit=medication.dose_unit),
                         "timing": {"repeat": {"frequency": medication.frequency_per_day, "period": 1,
                                               "periodUnit": "d"}},
                         "doseAndRate": [{"doseQuantity": {"value": dose, "unit": medication.dose_unit,
                                                           "system": "http://unitsofmeasure.org",
                                                           "code": medication.dose_unit}}]}
    if medication.route:
        instruction["route"] = {"coding": [dict(medication.route)]}
    drafts = [{"resourceType": "MedicationRequest", "id": "draft-1", "status": "draft", "intent": "order",
               "medicationCodeableConcept": {"text": written["medication_text"]},
               "subject": {"reference": f"Patient/{patient}"}, "authoredOn": today.isoformat(),
               "dosageInstruction": [instruction]}]
    for n in range(count - 1):
        drafts.append({"resourceType": "MedicationRequest", "id": f"other-{n}", "status": "draft", "intent": "order",
                       "medicationCodeableConcept": {"text": f"Other medicine {n} 10 mg tablets"},
                       "subject": {"reference": f"Patient/{patient}"}, "authoredOn": today.isoformat(),
                       "dosageInstruction": [{"text": "10 mg orally once daily"}]})
    return drafts


def cases(ruleset_id: str, patients: int | None = None) -> list[tuple[str, dt.date, list[dict]]]:
    """(patient id, day, the record as it stood that day) for each cohort patient on each evaluation date."""
    from bench.protocols import COHORT_PATIENTS, cohort
    from engine.fhir import resources_as_of

    found = []
    for patient in cohort(ruleset_id, patients or COHORT_PATIENTS):
        pid = next(r["id"] for r in patient.resources if r["resourceType"] == "Patient")
        for day in patient.evaluation_dates:
            found.append((pid, day, resources_as_of(patient.resources, day)))
    return found


def typical_case(ruleset_id: str) -> tuple[str, dt.date, list[dict]]:
    """The cohort case with the median record size: the one patient of the single-patient bodies."""
    found = sorted(cases(ruleset_id), key=lambda c: (len(json.dumps(c[2])), c[0], c[1]))
    return found[len(found) // 2]


def hook_body(ruleset_id: str, hook: str, today: dt.date, history: int | None = None, drafts: int = 1) -> dict:
    """A full CDS Hooks request for `hook` about the ruleset's typical cohort patient, prefetch filled; `history`
    sets how many results of the record's most repeated observation it carries (see `with_history`)."""
    pid, day, resources = typical_case(ruleset_id)
    if history is not None:
        resources = with_history(resources, history)
    return _request(hook, pid, draft_orders(ruleset_id, today, drafts, pid), _moved(resources, today - day, pid))


def repeated_code(resources: list[dict]) -> tuple[str, str]:
    """(system, code) of the observation the record holds most results of: the protocol's monitored value."""
    counts: dict[tuple[str, str], int] = {}
    for r in resources:
        if r.get("resourceType") == "Observation":
            coding = r["code"]["coding"][0]
            key = coding.get("system", ""), coding["code"]
            counts[key] = counts.get(key, 0) + 1
    return max(counts, key=lambda k: (counts[k], k))


def with_history(resources: list[dict], count: int) -> list[dict]:
    """The record with exactly `count` results of its most repeated observation: the newest kept, and when it has
    fewer, copies of the oldest one day apart before it (as a long chart holds them)."""
    system, code = repeated_code(resources)
    same = lambda r: (r.get("resourceType") == "Observation"  # noqa: E731
                      and (r["code"]["coding"][0].get("system", ""), r["code"]["coding"][0]["code"]) == (system, code))
    results = sorted((r for r in resources if same(r)), key=lambda r: r["effectiveDateTime"], reverse=True)
    kept = results[:count]
    oldest = results[-1]
    for n in range(count - len(kept)):
        earlier = dt.date.fromisoformat(oldest["effectiveDateTime"][:10]) - dt.timedelta(days=n + 1)
        kept.append({**oldest, "id": f"{oldest['id']}-h{n}",
                     "effectiveDateTime": earlier.isoformat() + oldest["effectiveDateTime"][10:]})
    return [r for r in resources if not same(r)] + kept


def _request(hook: str, patient: str, drafts: list[dict], resources: list[dict]) -> dict:
    """A CDS Hooks request about `patient`: the drafts as draftOrders (order hooks), `resources` as prefetch."""
    context: dict = {"userId": "Practitioner/dr1", "patientId": patient}
    if hook != "patient-view":
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": d} for d in drafts]}
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context,
            "prefetch": prefetch(resources, patient)}


def cohort_bodies(ruleset_id: str, hook: str, today: dt.date, patients: int | None = None) -> list[dict]:
    """Requests for `hook` about the ruleset's generated cohort: each patient on each of the dates where a protocol
    decision changes (screening, start, titration reviews, stop, out of scope), the record as it stood that day,
    moved in time so that the day is `today` (the server evaluates on the real date)."""
    return [_request(hook, pid, draft_orders(ruleset_id, today, 1, pid), _moved(resources, today - day, pid))
            for pid, day, resources in cases(ruleset_id, patients)]


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
