"""A FHIR server that misbehaves: slow, down, garbage, HTML, redirecting. Bounded time, then 412; never a hang."""
from __future__ import annotations

import http.server
import threading
import time
import uuid

import pytest

from tests.conftest import build_app, free_port

pytestmark = pytest.mark.timeout(60)
TIMEOUT = 0.5


class Misbehaving(http.server.BaseHTTPRequestHandler):
    mode = "slow"

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.mode == "slow":
            time.sleep(TIMEOUT * 6)
            body, kind, status = b"{}", "application/json", 200
        elif self.mode == "drip":  # headers at once, then a byte at a time
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            for _ in range(12):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(TIMEOUT / 2)
            return
        elif self.mode == "garbage":
            body, kind, status = b"\x00\xff{{{not json", "application/json", 200
        elif self.mode == "html":
            body, kind, status = b"<html><body>Login required</body></html>", "text/html", 200
        elif self.mode == "json-not-fhir":
            body, kind, status = b'{"hello": [1, 2, 3]}', "application/json", 200
        else:  # redirect
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.end_headers()
            return
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        return None


@pytest.fixture(scope="module")
def bad_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    server.shutdown()


@pytest.fixture(scope="module")
def client(tmp_path_factory, fhir_server):
    return build_app(tmp_path_factory.mktemp("faults"), fhir_server, FHIR_SERVERS=None,
                     FHIR_TIMEOUT=TIMEOUT).test_client()


def call(client, fhir_url: str):
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": fhir_url,
            "context": {"userId": "Practitioner/1", "patientId": "p1"}}
    started = time.monotonic()
    response = client.post("/cds-services/hetrombopag-patient-view", json=body)
    return response, time.monotonic() - started


@pytest.mark.parametrize("mode", ["slow", "drip", "garbage", "html", "json-not-fhir", "redirect"])
def test_a_misbehaving_fhir_server_gives_a_bounded_412(client, bad_server, mode):
    Misbehaving.mode = mode
    response, elapsed = call(client, bad_server)
    assert elapsed < TIMEOUT * 4 + 1.5, f"{mode}: {elapsed:.1f} s"
    if mode == "json-not-fhir":
        assert response.status_code in (200, 412)  # not a Bundle: nothing usable, said as 412 or no cards
    else:
        assert response.status_code == 412
    assert response.get_json()["resourceType"] in ("OperationOutcome",) or "cards" in response.get_json()


def test_a_fhir_server_that_is_down_gives_412_quickly(client):
    response, elapsed = call(client, f"http://127.0.0.1:{free_port()}/fhir")
    assert response.status_code == 412 and elapsed < TIMEOUT * 4 + 1.5
