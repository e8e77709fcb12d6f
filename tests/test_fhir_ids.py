"""Ids that break the FHIR R4 id pattern ([A-Za-z0-9-.]{1,64}): a request naming its draft orders or patient by one
is refused with an OperationOutcome; a fetched or prefetched resource with one is never the order a suggestion
changes, and card texts do not repeat the id."""
from __future__ import annotations

from datetime import date

import pytest

from engine.fhir import extract_facts, load_site_mapping
from tests import fhir_fixtures as fx
from tests.conftest import RULES_DIR, TODAY, hetrombopag_order, order_sign_request, patient_record
from tests.hook_calls import patient_view_with_prefetch, post

pytestmark = pytest.mark.timeout(60)

MARKUP_ID = "d1**URGENT**[log-in](https://evil.example)"


@pytest.mark.parametrize("ident", [MARKUP_ID, "d 1", "x" * 65, ""])
def test_a_draft_order_whose_id_is_not_a_fhir_id_is_refused(client, ident):
    body = order_sign_request("p1", [hetrombopag_order(ident, "p1", 5, "draft", TODAY)])
    status, outcome = post(client, "/cds-services/hetrombopag-order-sign", body)
    assert status == 400
    assert "context/draftOrders/entry/0/resource/id" in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize("patient", ["p1**URGENT**", "Patient/p 1", "Patient/"])
def test_a_patient_id_that_is_not_a_fhir_id_is_refused(client, patient):
    body = order_sign_request(patient, [hetrombopag_order("d1", "p1", 5, "draft", TODAY)])
    status, outcome = post(client, "/cds-services/hetrombopag-order-sign", body)
    assert status == 400
    assert "context/patientId" in outcome["issue"][0]["diagnostics"]


def test_an_active_order_whose_id_is_not_a_fhir_id_is_never_stopped(client, fhir, app):
    record = patient_record(TODAY)  # on 5 mg with platelets 120: the stop rule fires
    (order,) = [r for r in record if r["resourceType"] == "MedicationRequest"]
    order["id"] = MARKUP_ID
    fhir.reset(record)
    status, answer = patient_view_with_prefetch(app, fhir)
    assert status == 200
    (card,) = answer["cards"]
    assert card["source"]["topic"]["code"] == "stop-platelets" and "suggestions" not in card
    assert ("**No order is suggested:** the order to change ('active_order_id') was not found: "
            "MedicationRequest/(invalid id), the active order, has no valid FHIR id.") in card["detail"]
    assert "URGENT" not in card["detail"]


def test_a_resource_with_an_invalid_id_is_named_without_it():
    mapping = load_site_mapping(RULES_DIR / "site" / "fhir-r4.yaml")
    result, draft = fx.observation("777-3", 40, "10*9/L", date="2026-01-03"), fx.medication_request(status="draft")
    result["id"], draft["id"] = MARKUP_ID, "d 1"  # set after the fixtures' own FHIR validation, which refuses them
    out = extract_facts(mapping, [result], date(2026, 1, 4), draft_orders=[draft])
    assert out.facts["platelets_10e9_l"] == 40
    assert out.sources["platelets_10e9_l"].startswith("Observation/(invalid id) 777-3")
    assert "draft_order_id" not in out.facts
    assert out.problems["draft_order_id"] == "MedicationRequest/(invalid id), the draft order, has no valid FHIR id"
