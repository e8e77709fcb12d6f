"""Suggested orders a pharmacy system can take, through the real server: the site's medication coding, dose, route,
frequency, start date, authoredOn and requester, valid R4; a source that links to the protocol; and no suggestion
that would leave the order as it is."""
from __future__ import annotations

import copy
import datetime as dt
import uuid

import pytest
import requests
from fhir.resources.R4B.medicationrequest import MedicationRequest

from engine import fhir
from tests.conftest import (
    RULES_DIR,
    hetrombopag_order,
    order_sign_request,
    patient_record,
    prefetch_for,
)
from tests.fhir_server import FhirData

pytestmark = pytest.mark.timeout(120)
TODAY = dt.date.today()  # the server evaluates on the real date
MAPPING = fhir.load_site_mapping(RULES_DIR / "site" / "fhir-r4.yaml")


@pytest.fixture(scope="module")
def server(plain_server):
    live = copy.copy(plain_server)  # the shared server, with this module's own attributes
    listed = requests.get(f"{live.base_url}/cds-services", timeout=10).json()["services"]
    live.services = {s["hook"]: s for s in listed}
    return live


def call(server, hook: str, context: dict, record: list[dict]) -> list[dict]:
    service = server.services[hook]
    body = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context,
            "prefetch": prefetch_for(service["prefetch"], FhirData(record), "p1")}
    response = requests.post(f"{server.base_url}/cds-services/{service['id']}", json=body, timeout=20)
    assert response.status_code == 200, response.text
    return response.json()["cards"]


def test_a_start_order_carries_what_a_pharmacy_system_needs(server):
    cards = call(server, "patient-view", {"userId": "Practitioner/dr1", "patientId": "p1"},
                 patient_record(TODAY, on_therapy=False))
    (card,) = [c for c in cards if c["source"]["topic"]["code"] == "start-dose"]
    action = card["suggestions"][0]["actions"][0]
    order = action["resource"]
    MedicationRequest.model_validate(order)
    expected = [dict(c) for c in MAPPING.medications["hetrombopag"].order_coding]
    assert order["medicationCodeableConcept"]["coding"] == expected
    assert order["authoredOn"] == TODAY.isoformat() and order["requester"] == {"reference": "Practitioner/dr1"}
    instruction = order["dosageInstruction"][0]
    assert instruction["timing"]["repeat"]["boundsPeriod"]["start"] == TODAY.isoformat()
    assert instruction["timing"]["repeat"]["frequency"] == 1 and instruction["route"]["coding"][0]["code"]
    assert instruction["doseAndRate"][0]["doseQuantity"] == {"value": 5, "unit": "mg", "system":
                                                             "http://unitsofmeasure.org", "code": "mg"}
    # The order we suggest is recognised as ours when it comes back as a draft.
    assert fhir.draft_orders_mention(MAPPING, "hetrombopag", [order])


def test_a_requester_that_is_not_a_practitioner_is_left_out(server):
    cards = call(server, "patient-view", {"userId": "Patient/p1", "patientId": "p1"},
                 patient_record(TODAY, on_therapy=False))
    (card,) = [c for c in cards if c["source"]["topic"]["code"] == "start-dose"]
    assert "requester" not in card["suggestions"][0]["actions"][0]["resource"]


def test_every_card_links_to_the_protocols_public_record(server):
    draft = hetrombopag_order("draft-1", "p1", 10, "draft", TODAY)
    record = FhirData(patient_record(TODAY, platelets=40))
    body = order_sign_request("p1", [draft], prefetch=prefetch_for(server.services["order-sign"]["prefetch"], record,
                                                                    "p1"))
    response = requests.post(f"{server.base_url}/cds-services/hetrombopag-order-sign", json=body, timeout=20)
    cards = response.json()["cards"]
    assert cards and all(c["source"]["url"] == "https://clinicaltrials.gov/study/NCT06818916" for c in cards)


def test_no_card_suggests_the_dose_the_draft_already_holds(server):
    """On 5 mg at a review with platelets 40 the protocol steps up to 7.5 mg: a 7.5 mg draft needs no change."""
    draft = hetrombopag_order("draft-1", "p1", 7.5, "draft", TODAY)
    record = FhirData(patient_record(TODAY, platelets=40))
    body = order_sign_request("p1", [draft], prefetch=prefetch_for(server.services["order-sign"]["prefetch"], record,
                                                                    "p1"))
    response = requests.post(f"{server.base_url}/cds-services/hetrombopag-order-sign", json=body, timeout=20)
    cards = response.json()["cards"]
    suggested = [a["resource"] for c in cards for s in c.get("suggestions", []) for a in s["actions"]
                 if a["type"] == "update" and a["resource"].get("id") == "draft-1"]
    assert all(r["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] != 7.5 for r in suggested)


def sign(server, record: list[dict], draft: dict) -> list[dict]:
    body = order_sign_request("p1", [draft], prefetch=prefetch_for(server.services["order-sign"]["prefetch"],
                                                                    FhirData(record), "p1"))
    response = requests.post(f"{server.base_url}/cds-services/hetrombopag-order-sign", json=body, timeout=20)
    assert response.status_code == 200, response.text
    return response.json()["cards"]


def on_2_5_mg_at_a_review() -> list[dict]:
    record = patient_record(TODAY, platelets=40)
    active = next(r for r in record if r["id"] == "mr-active")
    active["dosageInstruction"] = hetrombopag_order("x", "p1", 2.5, "active", TODAY)["dosageInstruction"]
    return record


def test_a_draft_that_skips_a_level_is_one_dose_mismatch_naming_both_reasons(server):
    """Before, the only card announced '2.5 to 5' and silently rewrote the 7.5 mg draft."""
    cards = sign(server, on_2_5_mg_at_a_review(), hetrombopag_order("draft-1", "p1", 7.5, "draft", TODAY))
    assert [c["source"]["topic"]["code"] for c in cards] == ["dose-mismatch"]
    (card,) = cards
    assert "7.5" in card["summary"] and "5" in card["summary"]
    resource = card["suggestions"][0]["actions"][0]["resource"]
    assert resource["id"] == "draft-1"
    assert resource["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 5


def test_a_twice_daily_draft_of_the_right_daily_dose_is_a_dose_mismatch(server):
    """2.5 mg twice daily is 5 mg a day, as recommended, but the protocol gives it once daily."""
    draft = hetrombopag_order("draft-1", "p1", 2.5, "draft", TODAY)
    draft["dosageInstruction"][0]["timing"]["repeat"]["frequency"] = 2
    record = patient_record(TODAY, platelets=60)  # on 5 mg at a review, 50-100: keep 5 mg
    cards = sign(server, record, draft)
    assert "dose-mismatch" in [c["source"]["topic"]["code"] for c in cards]
    card = next(c for c in cards if c["source"]["topic"]["code"] == "dose-mismatch")
    resource = card["suggestions"][0]["actions"][0]["resource"]
    repeat = resource["dosageInstruction"][0]["timing"]["repeat"]
    assert repeat["frequency"] == 1 and resource["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 5


def test_the_basis_lists_only_the_comparisons_that_held(server):
    cards = sign(server, on_2_5_mg_at_a_review(), hetrombopag_order("draft-1", "p1", 7.5, "draft", TODAY))
    basis = cards[0]["detail"].split("**Basis**")[-1]
    assert "`draft_frequency_per_day` is 1; the rule checks ≠ 1" not in basis
