"""Only the patient's own data, each resource once, through the real server: a copy sent twice counts once, the
newer of two differing copies wins, and another patient's resources are never used."""
from __future__ import annotations

import copy
import datetime as dt

import pytest
import requests

from engine.record import OtherPatientError, own_record
from tests.conftest import hetrombopag_order, order_sign_request, patient_record, prefetch_for
from tests.fhir_server import FhirData

pytestmark = pytest.mark.timeout(120)
TODAY = dt.date.today()  # the server evaluates on the real date


@pytest.fixture(scope="module")
def server(plain_server):
    live = copy.copy(plain_server)  # the shared server, with this module's own attributes
    live.prefetch = next(s for s in requests.get(f"{live.base_url}/cds-services", timeout=10).json()["services"]
                         if s["hook"] == "order-sign")["prefetch"]
    return live


def sign(server, resources: list[dict], patient: str, drafts: list[dict]) -> requests.Response:
    body = order_sign_request(patient, drafts, prefetch=prefetch_for(server.prefetch, FhirData(resources), "p1"))
    return requests.post(f"{server.base_url}/cds-services/hetrombopag-order-sign", json=body, timeout=20)


def topics(response: requests.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return sorted(c["source"]["topic"]["code"] for c in response.json()["cards"])


def detail(response: requests.Response) -> str:
    return "\n".join(c["detail"] for c in response.json()["cards"])


def draft() -> dict:
    return hetrombopag_order("draft-1", "p1", 5, "draft", TODAY)


def test_a_transplant_sent_in_two_places_is_one_transplant(server):
    """Before, the second copy made a second transplant, and an eligible child was excluded."""
    record = patient_record(TODAY, on_therapy=False)
    once = topics(sign(server, record, "p1", [draft()]))
    procedure = next(r for r in record if r["resourceType"] == "Procedure")
    body = order_sign_request("p1", [draft()], prefetch=prefetch_for(server.prefetch, FhirData(record), "p1"))
    body["prefetch"]["procedures"]["entry"].append({"resource": copy.deepcopy(procedure)})
    body["prefetch"]["conditions"] = {"resourceType": "Bundle", "type": "searchset",  # and once more elsewhere
                                      "entry": body["prefetch"]["conditions"]["entry"] + [{"resource": procedure}]}
    twice = requests.post(f"{server.base_url}/cds-services/hetrombopag-order-sign", json=body, timeout=20)
    assert topics(twice) == once
    assert "eligibility-not-met" not in once


def test_of_two_differing_copies_the_later_update_wins(server):
    record = patient_record(TODAY, platelets=40)
    platelets = next(r for r in record if r["id"] == "plt1")
    newer = {**copy.deepcopy(platelets), "meta": {"lastUpdated": f"{TODAY}T10:00:00Z"}}
    newer["valueQuantity"]["value"] = 120
    older = {**platelets, "meta": {"lastUpdated": f"{TODAY}T08:00:00+00:00"}}
    record = [r for r in record if r["id"] != "plt1"]
    for order in ([older, newer], [newer, older]):
        answer = sign(server, record + order, "p1", [draft()])
        assert topics(answer) == ["stop-platelets"]  # 120 stops therapy; 40 would have stepped the dose up
        assert "platelets 120" in detail(answer)


def test_differing_copies_with_nothing_to_order_them_are_not_guessed_between():
    a = {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p1"},
         "valueQuantity": {"value": 1}}
    b = {**a, "valueQuantity": {"value": 2}}
    record = own_record([a, b, a], "p1")
    assert record.resources == [] and record.conflicting == ["Observation/o1"]


def test_another_patients_record_sent_under_this_patients_id_is_refused(server):
    """Before, a prefetch about p1 sent for p2 got dose cards that would update p2's order."""
    record = patient_record(TODAY, platelets=40)
    answer = sign(server, record, "p2", [hetrombopag_order("draft-1", "p2", 5, "draft", TODAY)])
    assert answer.status_code == 412
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Patient/p1" in outcome["issue"][0]["diagnostics"] and "Patient/p2" in outcome["issue"][0]["diagnostics"]


def test_another_patients_results_are_dropped_and_answered_as_missing(server):
    body = order_sign_request("p1", [draft()], prefetch=prefetch_for(
        server.prefetch, FhirData(patient_record(TODAY, platelets=40)), "p1"))
    for entry in body["prefetch"]["platelets"]["entry"]:
        entry["resource"]["subject"] = {"reference": "https://ehr.example/fhir/Patient/someone-else"}
    answer = requests.post(f"{server.base_url}/cds-services/hetrombopag-order-sign", json=body, timeout=20)
    assert "data-missing" in topics(answer)
    assert not {"titration-increase", "titration-maintain"} & set(topics(answer))


def test_a_draft_order_for_another_patient_is_not_spoken_about(server):
    record = patient_record(TODAY, platelets=40)
    answer = sign(server, record, "p1", [hetrombopag_order("draft-9", "p9", 7.5, "draft", TODAY)])
    assert answer.json() == {"cards": []}


@pytest.mark.parametrize("reference, kept", [
    ("Patient/p1", True), ("https://ehr.example/fhir/Patient/p1", True), ("Patient/p1/_history/3", True),
    ("Patient/p10", False), ("Patient/p", False), ("Group/p1", False), ("urn:uuid:p1", False), (None, False)])
def test_the_patient_is_named_by_a_literal_reference(reference, kept):
    resource = {"resourceType": "Condition", "id": "c1", "subject": {"reference": reference} if reference else {}}
    assert bool(own_record([resource], "p1").resources) is kept


def test_a_patient_resource_that_is_another_patients_raises():
    with pytest.raises(OtherPatientError):
        own_record([{"resourceType": "Patient", "id": "p2"}], "p1")
    assert own_record([{"resourceType": "Patient", "id": "p1"}], "p1").resources
