"""The deployment shape of docs/deployment.md, run for real: two instances (`cdsrules serve`, two workers each)
behind one public URL, sharing one rules folder and one store, on SQLite and on PostgreSQL.

Any instance answers any call alike (the workers keep no state between calls); a token used on one instance is a
replay on the other (the jti cache is in the store); feedback sent to both is kept once; both write one audit; a
draft saved in the workbench of one is listed and opens in the other's, and neither serves it.
"""
from __future__ import annotations

import datetime as dt
import re

import pytest
import requests
import yaml

from store import Store
from tests.conftest import (
    RULES_DIR,
    hetrombopag_order,
    order_sign_request,
    patient_record,
    prefetch_for,
    running_server,
    write_auth_config,
)
from tests.helpers import without_uuids

pytestmark = pytest.mark.timeout(90)

PUBLIC_URL = "https://cds.example.org"  # the load balancer's: tokens name it, whichever instance answers
SERVICE = "hetrombopag-order-sign"
USER_HEADER = "X-Forwarded-User"  # set by the reverse proxy in front of the workbench (here: the test, on loopback)


@pytest.fixture(scope="module")
def instances(module_store_url, tmp_path_factory, signer, fhir_server):  # noqa: F811 - the fixture above
    auth = write_auth_config(tmp_path_factory.mktemp("auth"), signer, PUBLIC_URL, [fhir_server.url])
    config = yaml.safe_load(auth.read_text())
    auth.write_text(yaml.safe_dump({**config, "workbench": {"trusted_header": USER_HEADER}}))
    arguments = ("--workers", "2", "--auth-config", str(auth), "--db", module_store_url, "--workbench")
    with running_server(tmp_path_factory.mktemp("cds-1"), *arguments) as first, \
            running_server(tmp_path_factory.mktemp("cds-2"), *arguments) as second:
        yield first, second


def send(instance, signer, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
    token = token or signer.token(PUBLIC_URL + path)
    return requests.request(method, instance.base_url + path, headers={"Authorization": f"Bearer {token}"},
                            timeout=20, **kwargs)


def test_either_instance_answers_a_call_alike_and_both_audit_to_the_one_store(instances, signer, fhir,
                                                                                module_store_url):  # noqa: F811
    today = dt.date.today()  # the servers evaluate on the real date
    fhir.reset(patient_record(today, platelets=40))
    services = send(instances[0], signer, "GET", "/cds-services").json()["services"]
    templates = next(s["prefetch"] for s in services if s["id"] == SERVICE)
    answers, instances_seen = [], []
    for instance in instances:
        body = order_sign_request("p1", [hetrombopag_order("draft-1", "p1", 5, "draft", today)],
                                  prefetch=prefetch_for(templates, fhir, "p1"))
        response = send(instance, signer, "POST", f"/cds-services/{SERVICE}", json=body)
        assert response.status_code == 200, response.text
        answers.append(response.json())
        instances_seen.append(body["hookInstance"])
    assert answers[0]["cards"], "the patient's platelets call for a card"
    assert without_uuids(answers[0]) == without_uuids(answers[1])
    audited = {row["hook_instance"] for row in Store(module_store_url).audit_rows()}
    assert set(instances_seen) <= audited


def test_a_token_used_on_one_instance_is_a_replay_on_the_other(instances, signer):
    token = signer.token(PUBLIC_URL + "/cds-services")
    assert send(instances[0], signer, "GET", "/cds-services", token=token).status_code == 200
    assert send(instances[1], signer, "GET", "/cds-services", token=token).status_code == 401
    assert send(instances[1], signer, "GET", "/cds-services").status_code == 200  # a fresh token is fine


def test_feedback_sent_to_both_instances_is_kept_once(instances, signer, fhir, module_store_url):  # noqa: F811
    today = dt.date.today()
    fhir.reset(patient_record(today, platelets=40))
    body = order_sign_request("p1", [hetrombopag_order("draft-1", "p1", 5, "draft", today)], fhirServer=fhir.url)
    card = send(instances[0], signer, "POST", f"/cds-services/{SERVICE}", json=body).json()["cards"][0]["uuid"]
    feedback = {"feedback": [{"card": card, "outcome": "overridden",
                              "outcomeTimestamp": "2026-06-02T10:00:00Z",
                              "overrideReason": {"reason": {"code": "patient-preference"}}}]}
    for instance in instances:  # an EHR retrying against whichever instance the balancer picks
        response = send(instance, signer, "POST", f"/cds-services/{SERVICE}/feedback", json=feedback)
        assert response.status_code == 200, response.text
    rows = [r for r in Store(module_store_url).feedback_rows(SERVICE) if r["card"] == card]
    assert len(rows) == 1


def test_a_draft_saved_on_one_instance_is_listed_and_opens_on_the_other_and_is_never_served(instances, signer):
    before = send(instances[1], signer, "GET", "/cds-services").json()
    text = (RULES_DIR / "hetrombopag" / "1.1.0.yaml").read_text().replace("    value: 18\n", "    value: 16\n", 1)
    saved = requests.post(instances[0].base_url + "/workbench/drafts/save", timeout=60, allow_redirects=False,
                          headers={USER_HEADER: "pharmacist.one"},
                          data={"text": text, "ruleset": "hetrombopag", "save_version": "1.7.0"})
    assert saved.status_code == 303, saved.text
    listing = requests.get(instances[1].base_url + "/workbench/", headers={USER_HEADER: "pharmacist.two"}, timeout=60)
    row = re.search(r'<tr class="saved-draft" data-ruleset="hetrombopag" data-version="1.7.0".*?</tr>', listing.text,
                    re.S)
    assert row and "saved by pharmacist.one" in row.group(0)
    opened = requests.get(instances[1].base_url + "/workbench/check", params={"draft": "hetrombopag@1.7.0"},
                          headers={USER_HEADER: "pharmacist.two"}, timeout=60)
    assert "Saved draft hetrombopag@1.7.0." in opened.text and "value: 16" in opened.text
    assert "version: 1.7.0" in opened.text
    for instance in instances:
        assert send(instance, signer, "GET", "/cds-services").json() == before  # a draft is never served
