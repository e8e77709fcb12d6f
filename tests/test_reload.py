"""Reload without downtime: a release picked up by the running server under load; a broken set refused."""
import datetime as dt
import shutil
import subprocess
import threading
import time
import uuid

import pytest
import requests

from engine import versions
from tests.conftest import REPO, cdsrules_command, patient_record, running_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def rules_copy(tmp_path):
    target = tmp_path / "rules"
    shutil.copytree(REPO / "rules", target, ignore=shutil.ignore_patterns(".reload"))
    return target


def wait_for(condition, base, timeout=20):
    """Every worker must agree: several answers in a row satisfy the condition."""
    deadline, streak = time.monotonic() + timeout, 0
    while time.monotonic() < deadline and streak < 8:
        streak = streak + 1 if condition(requests.get(base + "/readyz", timeout=5).json()) else 0
        time.sleep(0.15)
    return streak >= 8


def test_reload_under_load_activates_a_release_and_refuses_a_broken_set(rules_copy, tmp_path, fhir):
    today = dt.date.today()
    fhir.reset(patient_record(today, platelets=20))
    with running_server(tmp_path, "--rules", str(rules_copy), "--no-auth", "--workers", "2") as server:
        run_under_load(server.base_url, rules_copy, tmp_path, fhir, today)


def run_under_load(base, rules_copy, tmp_path, fhir, today):
    statuses, versions_seen, stop = [], set(), threading.Event()

    def load():
        with requests.Session() as session:
            while not stop.is_set():
                body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": fhir.url,
                        "context": {"userId": "Practitioner/dr1", "patientId": "p1"}}
                answer = session.post(base + "/cds-services/hetrombopag-patient-view", json=body, timeout=30)
                statuses.append(answer.status_code)
                for card in answer.json().get("cards", []):
                    versions_seen.add(card["extension"]["cdsrules.provenance"]["version"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1)
        versions.release(rules_copy / "hetrombopag" / "1.1.0.yaml", today, "Protocol committee")
        assert subprocess.run(cdsrules_command() + ["reload", "--rules", str(rules_copy)]).returncode == 0
        assert wait_for(lambda r: r["rulesets"] == ["hetrombopag@1.1.0"] and "reloadError" not in r, base)

        broken = rules_copy / "hetrombopag" / "1.2.0.yaml"
        broken.write_text((rules_copy / "hetrombopag" / "1.1.0.yaml").read_text()
                          .replace("version: 1.1.0", "version: 1.2.0").replace("{param: max_daily_dose_mg}",
                                                                               "{param: max_dose}", 1))
        assert subprocess.run(cdsrules_command() + ["reload", "--rules", str(rules_copy)],
                              capture_output=True).returncode == 1
        assert wait_for(lambda r: "max_dose" in r.get("reloadError", "") and r["rulesets"] == ["hetrombopag@1.1.0"],
                        base)
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert len(statuses) > 20 and set(statuses) == {200}
    assert versions_seen == {"1.0.1", "1.1.0"}  # the release in effect today, then the new one
    assert "rules reload refused" in (tmp_path / "server.log").read_text()
