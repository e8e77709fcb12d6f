"""Ids that break the FHIR R4 id pattern ([A-Za-z0-9-.]{1,64}): a request naming its draft orders or patient by one
is refused with an OperationOutcome."""
from __future__ import annotations

import pytest

from tests.conftest import TODAY, hetrombopag_order, order_sign_request
from tests.test_webhook_app import post

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
