"""Attacks on the service: a jku off the allowlist, SSRF through fhirServer, redirects to metadata addresses."""
from __future__ import annotations

import http.server
import os
import threading
import time
import uuid

import jwt
import pytest
import requests

from tests.conftest import ISSUER, build_app, write_auth_config
from webhook.prefetch import Fetcher, FetchError, is_safe_fetch_target

pytestmark = pytest.mark.timeout(60)
BASE = "http://localhost"
DISCOVERY = "/cds-services"


def token_with_jku(signer, jku: str) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": BASE + DISCOVERY, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    return jwt.encode(claims, signer.key, algorithm="ES384", headers={"kid": signer.kid, "jku": jku, "typ": "JWT"})


def test_a_jku_not_on_the_allowlist_is_refused_even_with_a_good_signature(tmp_path, signer, fhir_server):
    app = build_app(tmp_path, fhir_server, AUTH_CONFIG=str(write_auth_config(
        tmp_path, signer, BASE, [fhir_server.url], jku_allowlist=["https://ehr.example.org/jwks.json"])))
    client = app.test_client()
    for jku in ("https://attacker.example.net/jwks.json", "http://169.254.169.254/jwks"):
        response = client.get(DISCOVERY, headers={"Authorization": f"Bearer {token_with_jku(signer, jku)}"})
        assert response.status_code == 401
        assert "diagnostics" not in response.get_json()["issue"][0]


@pytest.mark.parametrize("url,safe", [
    ("http://127.0.0.1:8080/fhir", True),
    ("http://169.254.169.254/latest/meta-data", False),
    ("http://[fe80::1]/fhir", False),
    ("http://metadata.google.internal/computeMetadata", False),
    ("http://0.0.0.0/fhir", False),
    ("file:///etc/passwd", False),
    ("gopher://127.0.0.1/", False),
])
def test_fetch_targets(url, safe):
    assert is_safe_fetch_target(url) is safe


class _Redirector(http.server.BaseHTTPRequestHandler):
    hits: list = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        type(self).hits.append(self.path)
        self.send_response(302)
        self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
        self.end_headers()

    def log_message(self, *args):
        return None


@pytest.fixture
def redirector():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Redirector.hits = []
    yield f"http://127.0.0.1:{server.server_address[1]}/fhir", _Redirector.hits
    server.shutdown()


def patient_view(fhir_server_url: str) -> dict:
    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": fhir_server_url,
            "context": {"userId": "Practitioner/1", "patientId": "p1"}}


def test_metadata_addresses_are_never_fetched_and_the_answer_is_412(tmp_path, fhir_server):
    client = build_app(tmp_path, fhir_server, FHIR_SERVERS=None).test_client()
    response = client.post("/cds-services/hetrombopag-patient-view", json=patient_view("http://169.254.169.254/fhir"))
    assert response.status_code == 412
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_a_redirect_to_a_metadata_address_is_not_followed(tmp_path, fhir_server, redirector):
    url, hits = redirector
    client = build_app(tmp_path, fhir_server, FHIR_SERVERS=None).test_client()
    response = client.post("/cds-services/hetrombopag-patient-view", json=patient_view(url))
    assert hits, "the allowed server itself was asked"
    assert response.status_code == 412  # the redirect is an error, never followed


def test_a_file_url_is_a_bad_request(tmp_path, fhir_server):
    client = build_app(tmp_path, fhir_server, FHIR_SERVERS=None).test_client()
    response = client.post("/cds-services/hetrombopag-patient-view", json=patient_view("file:///etc/passwd"))
    assert response.status_code == 400


def test_patient_ids_in_logs_are_pseudonyms(tmp_path, fhir_server, caplog):
    import logging

    from tests.conftest import TODAY, patient_record
    fhir_server.reset(patient_record(TODAY, patient="patient-ZX81", platelets=40))
    client = build_app(tmp_path, fhir_server).test_client()
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": fhir_server.url,
            "context": {"userId": "Practitioner/1", "patientId": "patient-ZX81"}}
    with caplog.at_level(logging.INFO):
        assert client.post("/cds-services/hetrombopag-patient-view", json=body).status_code == 200
    lines = [r.getMessage() for r in caplog.records if "hookInstance=" in r.getMessage()]
    assert lines and all("patient=pt-" in line for line in lines)
    assert not any("ZX81" in r.getMessage() for r in caplog.records)


def test_a_pseudonym_is_the_keyed_hash_of_the_id_and_the_key_is_drawn_once(monkeypatch):
    import hashlib
    import hmac

    from webhook import privacy
    monkeypatch.delenv(privacy.KEY_VARIABLE, raising=False)
    privacy.ensure_key()
    key = os.environ[privacy.KEY_VARIABLE]
    privacy.ensure_key()
    assert os.environ[privacy.KEY_VARIABLE] == key  # the workers' key stays the master's
    expected = "pt-" + hmac.new(key.encode(), b"patient-ZX81", hashlib.sha256).hexdigest()[:16]
    assert privacy.pseudonym("patient-ZX81") == privacy.pseudonym("patient-ZX81") == expected
    assert privacy.pseudonym("patient-ZX82") != expected
    monkeypatch.setenv(privacy.KEY_VARIABLE, "another deployment")
    assert privacy.pseudonym("patient-ZX81") != expected


def test_log_records_are_made_printable_and_numbers_keep_their_format():
    import logging

    from webhook.privacy import EscapeControlCharacters
    record = logging.LogRecord("webhook.test", logging.INFO, __file__, 1, "%s took %.1f ms (%d)",
                               ("h1\r\nforged\u2028line\x1b[31m", 2.25, 7), None)
    assert EscapeControlCharacters().filter(record)
    assert record.getMessage() == "h1\\r\\nforged\\u2028line\\x1b[31m took 2.2 ms (7)"


def test_too_many_resources_in_one_request_is_413(tmp_path, fhir_server):
    client = build_app(tmp_path, fhir_server).test_client()
    observation = {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "x"}}
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": observation}] * 10_001}
    body = {**patient_view(fhir_server.url), "prefetch": {"platelets": bundle}}
    response = client.post("/cds-services/hetrombopag-patient-view", json=body)
    assert response.status_code == 413 and "10001 resources" in response.get_json()["issue"][0]["diagnostics"]


def test_the_fallback_fetch_checks_the_address_it_connects_to(fhir_server):
    """A name can resolve to an allowed address when the call is accepted and to a metadata address when the
    fetch connects (DNS rebinding): the fetch resolves, checks and connects to the checked address itself."""
    fhir_server.reset([{"resourceType": "Patient", "id": "p1"}])
    blocked = fhir_server.url.replace("127.0.0.1", "0.0.0.0")  # on Linux, this reaches the loopback server
    assert requests.get(f"{blocked}/Patient/p1", timeout=5).status_code == 200, "plain HTTP gets through"
    fhir_server.reset()
    with pytest.raises(FetchError):
        Fetcher(2.0).fetch(blocked, "Patient/p1", "a-token")
    assert fhir_server.requests == [], "nothing was sent, the token least of all"
    assert Fetcher(2.0).fetch(fhir_server.url, "Patient/p1", "a-token")["id"] == "p1"
