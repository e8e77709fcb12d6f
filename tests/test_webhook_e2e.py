"""End to end: `cdsrules serve` under gunicorn (two workers, JWT auth) on a free loopback port, called as an EHR
calls it: discovery, prefetch filled from the templates, each service, feedback, the FHIR fallback, and tokens."""
from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.cds_conformance import assert_conformant
from tests.conftest import (
    EXTERNAL,
    REPO,
    TOKEN,
    cdsrules_command,
    hetrombopag_order,
    order_sign_request,
    patient_record,
    prefetch_for,
)

pytestmark = pytest.mark.timeout(60)


class Ehr:
    """A CDS client: signs every call for the exact URL it calls."""

    def __init__(self, server, signer):
        self.server, self.signer = server, signer

    def get(self, path: str, token: str | None = "sign") -> requests.Response:
        return requests.get(self.server.base_url + path, headers=self._headers(path, token), timeout=10)

    def post(self, path: str, body: dict, token: str | None = "sign") -> requests.Response:
        response = requests.post(self.server.base_url + path, json=body, headers=self._headers(path, token),
                                 timeout=10)
        if response.status_code == 200 and not path.endswith("/feedback"):
            assert_conformant(response.json())
        return response

    def _headers(self, path: str, token: str | None) -> dict:
        if token == "sign":
            token = self.signer.token(self.server.base_url + path)
        return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture
def ehr(live_server, signer, fhir):
    return Ehr(live_server, signer)


def test_an_ehr_session(ehr, fhir, live_server):
    today = dt.date.today()  # the live server evaluates on the real date
    fhir.reset(patient_record(today, platelets=40))
    services = {s["id"]: s for s in ehr.get("/cds-services").json()["services"]}
    assert {"hetrombopag-patient-view", "hetrombopag-order-select", "hetrombopag-order-sign"} <= set(services)

    draft = hetrombopag_order("draft-1", "p1", 5, "draft", today)
    contexts = {
        "patient-view": {"userId": "Practitioner/dr1", "patientId": "p1"},
        "order-select": {"userId": "Practitioner/dr1", "patientId": "p1", "selections": ["MedicationRequest/draft-1"],
                         "draftOrders": {"resourceType": "Bundle", "type": "collection",
                                         "entry": [{"resource": draft}]}},
        "order-sign": {"userId": "Practitioner/dr1", "patientId": "p1",
                       "draftOrders": {"resourceType": "Bundle", "type": "collection",
                                       "entry": [{"resource": draft}]}},
    }
    cards = []
    for service_id, service in services.items():
        body = {"hook": service["hook"], "hookInstance": str(uuid.uuid4()), "context": contexts[service["hook"]],
                "prefetch": prefetch_for(service["prefetch"], fhir, "p1")}
        response = ehr.post(f"/cds-services/{service_id}", body)
        assert response.status_code == 200, response.text
        cards += [(service_id, c) for c in response.json()["cards"]]
    assert cards, "this patient's data calls for advice"

    service_id, card = cards[0]
    feedback = {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                              "overrideReason": {"reason": card.get("overrideReasons", [{}])[0]},
                              "outcomeTimestamp": "2025-06-02T10:00:00Z"}]}
    for _ in range(2):
        assert ehr.post(f"/cds-services/{service_id}/feedback", feedback).status_code == 200
    with sqlite3.connect(live_server.db_path) as db:
        assert db.execute("SELECT count(*) FROM feedback WHERE card = ?", (card["uuid"],)).fetchone() == (1,)
        audited = {row[0] for row in db.execute("SELECT service FROM audit")}
    assert set(services) <= audited


def test_fhir_fallback_uses_the_bearer_token_and_never_logs_it(ehr, fhir, live_server):
    fhir.reset(patient_record(dt.date.today()))
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/dr1", "patientId": "Patient/p1"},
            "fhirServer": fhir.url,
            "fhirAuthorization": {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                  "scope": "patient/*.read", "subject": "cds-service"}}
    response = ehr.post("/cds-services/hetrombopag-patient-view", body)
    assert response.status_code == 200, response.text
    assert fhir.requests, "the missing prefetch was fetched"
    assert all(r["headers"]["Authorization"] == f"Bearer {TOKEN}" for r in fhir.requests)
    time.sleep(0.3)  # let the access log flush
    assert TOKEN not in live_server.log()


def test_missing_data_is_412_and_other_drugs_get_no_cards(ehr, fhir):
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": "p1"}}
    response = ehr.post("/cds-services/hetrombopag-patient-view", body)
    assert response.status_code == 412 and response.json()["resourceType"] == "OperationOutcome"
    other = order_sign_request("p1", [{"resourceType": "MedicationRequest", "id": "x", "status": "draft",
                                       "intent": "order", "medicationCodeableConcept": {"text": "Paracetamol"}}],
                               fhirServer=fhir.url)
    response = ehr.post("/cds-services/hetrombopag-order-sign", other)
    assert response.status_code == 200 and response.json() == {"cards": []}
    assert fhir.requests == []


def test_external_fixtures_against_the_live_server(ehr):
    for path in sorted(EXTERNAL.rglob("*request*.json")):
        document = json.loads(path.read_text())
        hook = document.get("hook", "patient-view")
        response = ehr.post(f"/cds-services/hetrombopag-{hook}", document)
        assert response.status_code in (200, 400, 404, 412), (path.name, response.status_code)
        if response.status_code != 200:
            assert response.json()["resourceType"] == "OperationOutcome"


def test_errors_over_http(ehr, live_server):
    assert ehr.post("/cds-services/nope", {"hook": "x"}).status_code == 404
    assert ehr.get("/cds-services/hetrombopag-order-sign").status_code == 405
    path = "/cds-services/hetrombopag-order-sign"
    headers = {"Authorization": f"Bearer {ehr.signer.token(live_server.base_url + path)}",
               "Content-Type": "application/json"}
    response = requests.post(live_server.base_url + path, data=b"{nope", headers=headers, timeout=10)
    assert response.status_code == 400 and response.json()["resourceType"] == "OperationOutcome"
    big = b'{"hook": "order-sign", "pad": "' + b"x" * (6 * 1024 * 1024) + b'"}'
    headers["Authorization"] = f"Bearer {ehr.signer.token(live_server.base_url + path)}"
    response = requests.post(live_server.base_url + path, data=big, headers=headers, timeout=10)
    assert response.status_code == 413


def test_a_chunked_body_over_the_limit_is_413_like_one_with_a_length(ehr, live_server):
    path = "/cds-services/hetrombopag-order-sign"
    limit = 5 * 1024 * 1024

    def chunked(size: int) -> tuple[int, dict]:
        start, end = b'{"hook": "order-sign", "pad": "', b'"}'
        body = start + b"x" * (size - len(start) - len(end)) + end
        headers = {"Authorization": f"Bearer {ehr.signer.token(live_server.base_url + path)}",
                   "Content-Type": "application/json"}
        response = requests.post(live_server.base_url + path, headers=headers, timeout=20,
                                 data=(body[i:i + 65536] for i in range(0, size, 65536)))  # no Content-Length
        return response.status_code, response.json()

    for size in (limit + 1, 6 * 1024 * 1024):
        status, outcome = chunked(size)
        assert status == 413 and outcome["issue"][0]["code"] == "too-long", size
    status, outcome = chunked(limit)  # at the limit: read whole, and judged as a request
    assert status == 400 and "schema" in outcome["issue"][0]["diagnostics"]


def test_no_request_value_starts_a_log_line_of_its_own(live_server):
    """A newline in a value that is logged (here the path, by a refused token) is written as an escape."""
    marker = f"forged-{uuid.uuid4().hex[:8]}"
    response = requests.get(f"{live_server.base_url}/cds-services%0A{marker}%0D%0A{marker}",
                            headers={"Authorization": "Bearer not.a.token"}, timeout=10)
    assert response.status_code == 401
    time.sleep(0.3)  # let the log flush
    lines = [line for line in live_server.log().splitlines() if marker in line]
    assert lines and not any(line.startswith(marker) for line in lines), lines


def test_tokens_over_http(ehr, live_server):
    now = int(time.time())
    assert ehr.get("/cds-services", token=None).status_code == 401
    assert ehr.get("/cds-services", token=ehr.signer.token(live_server.base_url + "/other")).status_code == 401
    expired = ehr.signer.token(live_server.base_url + "/cds-services", iat=now - 600, exp=now - 300)
    assert ehr.get("/cds-services", token=expired).status_code == 401
    unsigned = ".".join(part for part in ehr.signer.token(live_server.base_url + "/cds-services").split(".")[:2])
    none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"  # {"alg":"none","typ":"JWT"}
    assert ehr.get("/cds-services", token=f"{none_header}.{unsigned.split('.')[1]}.").status_code == 401
    token = ehr.signer.token(live_server.base_url + "/cds-services")
    assert ehr.get("/cds-services", token=token).status_code == 200
    for _ in range(3):  # whichever worker answers, the jti was seen
        assert ehr.get("/cds-services", token=token).status_code == 401
    preflight = requests.options(live_server.base_url + "/cds-services/hetrombopag-order-sign", timeout=10,
                                 headers={"Origin": "https://ehr.example", "Access-Control-Request-Method": "POST",
                                          "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 200 and "authorization" in preflight.headers["Access-Control-Allow-Headers"]


def test_serve_without_auth_warns_and_refuses_bad_rules(tmp_path):
    result = subprocess.run(cdsrules_command() + ["serve", "--rules", str(tmp_path / "missing"), "--no-auth",
                                                  "--db", f"sqlite:///{tmp_path / 'x.db'}"],
                            cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "authentication is OFF" in result.stderr
    result = subprocess.run(cdsrules_command() + ["serve"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "--no-auth" in result.stderr


def test_python_m_webhook_server_needs_an_auth_choice():
    result = subprocess.run([sys.executable, "-m", "webhook.server"], cwd=REPO, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and "--no-auth" in result.stderr
    usage = subprocess.run([sys.executable, "-m", "webhook.server", "--help"], cwd=REPO, capture_output=True,
                           text=True, timeout=30).stdout
    assert usage.startswith("usage: cdsrules serve") and "--workbench" in usage  # one set of options, not two


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no memory-backed /dev/shm here")
def test_workers_keep_their_heartbeat_in_memory_not_on_disk(live_server):
    """gunicorn touches each worker's heartbeat file on every loop; on disk, a touch can wait behind an fsync."""
    workers = Path(f"/proc/{live_server.process.pid}/task/{live_server.process.pid}/children").read_text().split()
    assert workers
    for pid in workers:
        open_files = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir() if fd.is_symlink()]
        assert any(f.startswith("/dev/shm/wgunicorn-") for f in open_files), open_files
