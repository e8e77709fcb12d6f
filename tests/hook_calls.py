"""Hook calls posted as an EHR posts them, each answer checked against what CDS Hooks requires of it."""
from __future__ import annotations

import json
import uuid

from tests.cds_conformance import assert_conformant
from tests.conftest import prefetch_for


def post(client, path: str, body) -> tuple[int, dict]:
    """The status and JSON answer of a POST (a dict is sent as JSON, bytes or text as they are); never a 500."""
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    response = client.post(path, data=data, content_type="application/json")
    payload = response.get_json(silent=True)
    assert response.status_code != 500 and payload is not None, response.data[:500]
    if response.status_code == 200 and path.count("/") == 2:
        assert_conformant(payload)
    elif response.status_code >= 400:
        assert payload["resourceType"] == "OperationOutcome", payload
        assert payload["issue"][0]["severity"] and payload["issue"][0]["code"]
    return response.status_code, payload


def patient_view_with_prefetch(app, fhir, patient: str = "p1") -> tuple[int, dict]:
    """A patient-view whose prefetch the client filled from the FHIR server's data, posted as an EHR posts it."""
    templates = app.extensions["cdsrules"].services["hetrombopag-patient-view"].prefetch
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": patient},
            "prefetch": prefetch_for(templates, fhir, patient)}
    return post(app.test_client(), "/cds-services/hetrombopag-patient-view", body)
