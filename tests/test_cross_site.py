"""Web pages acting through a browser against the service without authentication: DNS rebinding (a foreign Host),
in-process and over real gunicorn, and cross-site feedback."""
from __future__ import annotations

import json
import subprocess
import uuid

import pytest
import requests

from tests.conftest import TODAY, build_app, cdsrules_command, patient_record, running_server

pytestmark = pytest.mark.timeout(120)
DISCOVERY = "/cds-services"


@pytest.fixture(scope="module")
def client(tmp_path_factory, fhir_server):
    directory = tmp_path_factory.mktemp("cross-site")
    return build_app(directory, fhir_server, ALLOWED_HOSTS=["cds.test"]).test_client()


def test_without_authentication_a_foreign_host_gets_421_everywhere(client):
    for response in (client.get(DISCOVERY, headers={"Host": "attacker.example"}),
                     client.post(f"{DISCOVERY}/hetrombopag-patient-view", json={},
                                 headers={"Host": "attacker.example:8080"}),
                     client.get("/no/such/path", headers={"Host": "attacker.example"})):
        assert response.status_code == 421
        issue = response.get_json()["issue"][0]
        assert issue["code"] == "forbidden" and "DNS rebinding" in issue["diagnostics"]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:8080", "[::1]:8080", "cds.test", "cds.test:8443"])
def test_without_authentication_loopback_and_allowed_names_are_answered(client, host):
    assert client.get(DISCOVERY, headers={"Host": host}).status_code == 200


def test_with_authentication_the_service_does_not_look_at_host(tmp_path, fhir_server, signer):
    from tests.conftest import write_auth_config

    auth = write_auth_config(tmp_path, signer, "https://cds.example", [fhir_server.url])
    client = build_app(tmp_path, fhir_server, AUTH_CONFIG=str(auth)).test_client()
    token = signer.token("https://cds.example" + DISCOVERY)
    response = client.get(DISCOVERY, headers={"Host": "cds-1.internal:8080", "Authorization": f"Bearer {token}"})
    assert response.status_code == 200  # behind a load balancer; the token's aud binds it to base_url


def test_over_gunicorn_only_allowed_host_names_are_answered(tmp_path):
    with running_server(tmp_path, "--no-auth", "--workbench", "--workers", "1", "--allowed-host", "cds.test") as live:
        def get(path: str, host: str) -> requests.Response:
            return requests.get(live.base_url + path, headers={"Host": host}, timeout=10)

        for path in (DISCOVERY, "/workbench/"):
            assert get(path, "attacker.example").status_code == 421
            assert get(path, "localhost").status_code == 200
            assert get(path, "cds.test:8080").status_code == 200
        assert "DNS rebinding" in get("/workbench/", "attacker.example").text
        assert requests.get(live.base_url + DISCOVERY, timeout=10).status_code == 200  # 127.0.0.1:port


def test_a_bad_allowed_host_stops_serve_with_a_message():
    result = subprocess.run(cdsrules_command() + ["serve", "--no-auth", "--port", "1", "--allowed-host", "a/b"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--allowed-host 'a/b' is not a host name" in result.stderr


# --- feedback from another site's page --------------------------------------------------------------

FEEDBACK = f"{DISCOVERY}/hetrombopag-patient-view/feedback"


def issued_card(client, fhir) -> str:
    """A card the patient-view service issued just now: feedback is taken only for those."""
    fhir.reset(patient_record(TODAY, platelets=40))
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": fhir.url,
            "context": {"userId": "Practitioner/dr1", "patientId": "p1"}}
    answer = client.post(DISCOVERY + "/hetrombopag-patient-view", json=body).get_json()
    return answer["cards"][0]["uuid"]


def feedback(card: str) -> dict:
    return {"feedback": [{"card": card, "outcome": "accepted", "outcomeTimestamp": "2026-06-02T10:00:00Z"}]}


def stored_cards(client) -> set[str]:
    return {row["card"] for row in client.application.extensions["cdsrules"].store.feedback_rows()}


@pytest.mark.parametrize("headers", [{"Origin": "https://attacker.example"}, {"Sec-Fetch-Site": "cross-site"},
                                     {"Origin": "null"}])
def test_feedback_from_another_sites_page_is_refused(client, headers):
    card = str(uuid.uuid4())
    for content_type in ("application/json", "text/plain"):
        response = client.post(FEEDBACK, data=json.dumps(feedback(card)), content_type=content_type, headers=headers)
        assert response.status_code == 403
        assert response.get_json()["resourceType"] == "OperationOutcome"
    assert card not in stored_cards(client)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          None])
def test_feedback_that_is_not_json_is_415(client, content_type):
    card = str(uuid.uuid4())
    response = client.post(FEEDBACK, data=json.dumps(feedback(card)), content_type=content_type)
    assert response.status_code == 415 and response.get_json()["issue"][0]["code"] == "not-supported"
    assert card not in stored_cards(client)


@pytest.mark.parametrize("headers", [{}, {"Origin": "http://localhost:3000", "Sec-Fetch-Site": "same-site"}])
def test_feedback_from_an_ehr_server_or_a_local_page_is_stored(client, fhir, headers):
    card = issued_card(client, fhir)
    assert client.post(FEEDBACK, json=feedback(card), headers=headers).status_code == 200
    assert card in stored_cards(client)


def test_hook_services_keep_cors_for_ehr_browsers(client):
    origin = {"Origin": "https://ehr.example"}
    preflight = client.options(FEEDBACK, headers={**origin, "Access-Control-Request-Method": "POST",
                                                  "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 200 and preflight.headers["Access-Control-Allow-Origin"] in ("*", origin["Origin"])
    discovery = client.get(DISCOVERY, headers={**origin, "Sec-Fetch-Site": "cross-site"})
    assert discovery.status_code == 200 and "Access-Control-Allow-Origin" in discovery.headers
