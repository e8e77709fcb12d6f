"""/metrics under the real server: two gunicorn workers, counts that add up across them, and a worker that dies
keeps its counts in the totals (prometheus-client multiprocess mode, set up by `cdsrules serve`)."""
from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import hetrombopag_order, order_sign_request, patient_record, prefetch_for, running_server

pytestmark = pytest.mark.timeout(120)

SERVICE = "hetrombopag-order-sign"
CALLS = 60
DISCOVERIES = 25


@pytest.fixture
def server(tmp_path):
    """`cdsrules serve --no-auth --workers 2` with its multiprocess directory where the test can see it."""
    metrics_dir = tmp_path / "metrics"
    with running_server(tmp_path, "--no-auth", "--workers", "2",
                        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}) as live:
        live.metrics_dir = metrics_dir
        yield live


def scrape(base_url: str) -> dict[tuple, float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    response = requests.get(f"{base_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(value for (sample, found), value in samples.items()
               if sample == name and all(dict(found).get(k) == v for k, v in labels.items()))


def worker_pids(directory: Path) -> set[int]:
    return {int(p.stem.rsplit("_", 1)[1]) for p in directory.glob("counter_*.db")}


def send_calls(server, fhir_server) -> dict[str, int]:
    """CALLS order-sign calls and DISCOVERIES discovery calls from 8 threads, one connection per call; the card
    topics returned, counted."""
    today = dt.date.today()  # the live server evaluates on the real date
    fhir_server.reset(patient_record(today, platelets=40))
    templates = requests.get(f"{server.base_url}/cds-services", timeout=10).json()["services"]
    prefetch = prefetch_for(next(s for s in templates if s["id"] == SERVICE)["prefetch"], fhir_server, "p1")
    body = order_sign_request("p1", [hetrombopag_order("draft-1", "p1", 5, "draft", today)], prefetch=prefetch)

    def call(n: int) -> list[str]:
        if n < DISCOVERIES:
            response = requests.get(f"{server.base_url}/cds-services", timeout=10)
            assert response.status_code == 200
            return []
        response = requests.post(f"{server.base_url}/cds-services/{SERVICE}",
                                 json={**body, "hookInstance": str(uuid.uuid4())}, timeout=10)
        assert response.status_code == 200, response.text
        return [c["source"]["topic"]["code"] for c in response.json()["cards"]]

    topics: dict[str, int] = {}
    with ThreadPoolExecutor(8) as pool:
        for found in pool.map(call, range(DISCOVERIES + CALLS)):
            for topic in found:
                topics[topic] = topics.get(topic, 0) + 1
    return topics


def test_counts_add_up_across_two_workers(server, fhir_server):
    before = scrape(server.base_url)  # the discovery calls of send_calls come after this
    topics: dict[str, int] = {}
    rounds = 0
    while rounds < 5 and (rounds == 0 or len(worker_pids(server.metrics_dir)) < 2):
        # The kernel may hand every connection of a round to one worker on a busy machine; another round lets the
        # second answer too, which is what this test needs to add counts up across workers.
        for topic, count in send_calls(server, fhir_server).items():
            topics[topic] = topics.get(topic, 0) + count
        rounds += 1
    assert topics, "this patient's data calls for advice"
    assert len(worker_pids(server.metrics_dir)) >= 2, "both workers should have answered some calls"

    for _ in range(4):  # whichever worker answers the scrape, the totals are the same
        samples = scrape(server.base_url)
        calls = total(samples, "cdsrules_requests_total", endpoint="hooks.call", service=SERVICE, status="200")
        assert calls == CALLS * rounds
        assert total(samples, "cdsrules_request_duration_seconds_count", endpoint="hooks.call",
                     service=SERVICE) == CALLS * rounds
        discoveries = total(samples, "cdsrules_requests_total", endpoint="hooks.discovery") - \
            total(before, "cdsrules_requests_total", endpoint="hooks.discovery")
        assert discoveries == (DISCOVERIES + 1) * rounds  # and the one that read the prefetch templates
        assert total(samples, "cdsrules_evaluations_total", service=SERVICE, ruleset="hetrombopag") == CALLS * rounds
        for topic, count in topics.items():
            assert total(samples, "cdsrules_decisions_total", service=SERVICE, topic=topic) == count
        assert total(samples, "cdsrules_rules_reload_failed") == 0
        assert total(samples, "cdsrules_ruleset_version_loaded", ruleset="hetrombopag", version="1.0.0") == 1


def test_readyz_counts_the_audit_failures_of_every_worker(server, fhir_server):
    """Whichever worker answers /readyz, auditFailures is the count of both (it was each worker's own)."""
    with sqlite3.connect(server.db_path) as db:
        db.execute("DROP TABLE audit")  # the store answers, but no audit write can land
    body = order_sign_request("p1", [])
    with ThreadPoolExecutor(4) as pool:  # one connection per call, several at once: both workers take some
        statuses = list(pool.map(lambda _: requests.post(f"{server.base_url}/cds-services/{SERVICE}", timeout=10,
                                                         json={**body, "hookInstance": str(uuid.uuid4())}
                                                         ).status_code, range(12)))
        assert statuses == [503] * 12
        seen = list(pool.map(lambda _: requests.get(f"{server.base_url}/readyz", timeout=10).json()["auditFailures"],
                             range(16)))
    assert seen == [12] * 16
    assert total(scrape(server.base_url), "cdsrules_audit_failures_total") == 12


def test_a_dead_workers_counts_stay(server, fhir_server):
    send_calls(server, fhir_server)
    pids = sorted(worker_pids(server.metrics_dir))
    os.kill(pids[0], signal.SIGKILL)  # gunicorn starts another; child_exit marks the dead one
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alive = [p for p in pids if Path(f"/proc/{p}").exists() and "zombie" not in _state(p)]
        if len(alive) < len(pids) and requests.get(f"{server.base_url}/readyz", timeout=5).status_code == 200:
            break
        time.sleep(0.2)
    samples = scrape(server.base_url)
    assert total(samples, "cdsrules_requests_total", endpoint="hooks.call", service=SERVICE, status="200") == CALLS
    assert total(samples, "cdsrules_rules_reload_failed") == 0


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0].lower()
    except (OSError, IndexError):
        return "zombie"
