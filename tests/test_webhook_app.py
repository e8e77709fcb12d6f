"""The app from its factory, through Flask's test client: discovery, every external fixture replayed, the error
statuses, the 412 path, feedback idempotency, audit, CORS, and order hooks that are not about our drug."""
from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import EXTERNAL, TODAY, hetrombopag_order, order_sign_request, patient_record, prefetch_for
from tests.hook_calls import post

pytestmark = pytest.mark.timeout(60)

PROTOCOLS = ("eltrombopag-itp", "hetrombopag")
SERVED_HOOKS = {"patient-view", "order-select", "order-sign"}
SERVICE_IDS = {f"{protocol}-{hook}" for protocol in PROTOCOLS for hook in SERVED_HOOKS}
ORDER_HOOKS = {"order-select", "order-sign"}


# --- discovery --------------------------------------------------------------------------------


def test_discovery_lists_one_service_per_hook_with_prefetch(client):
    services = client.get("/cds-services").get_json()["services"]
    assert {s["id"] for s in services} == SERVICE_IDS
    for service in services:
        assert service["hook"] in SERVED_HOOKS and service["id"].endswith(f"-{service['hook']}")
        assert service["title"] and service["description"] and service["usageRequirements"]
        assert service["prefetch"]["patient"] == "Patient/{{context.patientId}}"
        observation = [t for t in service["prefetch"].values() if t.startswith("Observation?")]
        assert any("http://loinc.org|777-3" in t and "_sort=-date" in t and "_count=" in t for t in observation)


# --- every external request fixture -------------------------------------------------------------


def external_requests() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(EXTERNAL.rglob("*.json")):
        document = json.loads(path.read_text())
        if not isinstance(document, dict):
            continue
        name = str(path.relative_to(EXTERNAL))
        if "hook" in document and "hookInstance" in document:
            found.append((name, document))
        elif "context" in document or "draftOrders" in document:
            found.append((name, document))  # a bare context from the hook library pages
    return found


def hook_of(name: str, document: dict) -> str | None:
    if "hook" in document:
        return document["hook"]
    for hook in ("patient-view", "order-select", "order-sign"):
        if hook in name:
            return hook
    return None


@pytest.mark.parametrize("name, document", external_requests(), ids=[n for n, _ in external_requests()])
def test_external_fixture_replayed(client, fhir, name, document):
    hook = hook_of(name, document)
    if "hook" not in document:
        # As published (a bare context, no hook or hookInstance) it is not a request: 400.
        status, _ = post(client, "/cds-services/hetrombopag-patient-view", document)
        assert status == 400
        if hook is None:
            return
        context = document.get("context", document)
        document = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}
    if hook not in SERVED_HOOKS:
        status, _ = post(client, f"/cds-services/hetrombopag-{hook}", document)
        assert status == 404
        status, _ = post(client, "/cds-services/hetrombopag-patient-view", document)
        assert status == 400
        return
    status, body = post(client, f"/cds-services/hetrombopag-{hook}", document)
    if hook in ORDER_HOOKS and "patientId" in document["context"]:
        assert (status, body) == (200, {"cards": []}), "no draft order is ours: no cards"
    elif "patientId" not in document["context"]:
        assert status == 400
    else:
        assert status == 412, "its fhirServer is not one we may fetch from, and the prefetch lacks our data"
    assert fhir.requests == []


def test_fixture_patient_view_with_our_fhir_server_is_answered(client, fhir):
    document = json.loads((EXTERNAL / "hl7-cds-hooks-2.0.1/patient-view-request.json").read_text())
    document["fhirServer"] = fhir.url
    fhir.reset(patient_record(TODAY, patient=document["context"]["patientId"]))
    status, _ = post(client, "/cds-services/hetrombopag-patient-view", document)
    assert status == 200
    assert fhir.requests and all(r["headers"]["Authorization"] == "Bearer some-opaque-fhir-access-token"
                                 for r in fhir.requests)


# --- errors -------------------------------------------------------------------------------------


def test_malformed_json_is_400(client):
    assert post(client, "/cds-services/hetrombopag-order-sign", b'{"hook": ')[0] == 400


@pytest.mark.parametrize("body", [
    {"hook": "order-sign", "context": {"patientId": "p1", "draftOrders": []}},  # no hookInstance
    {"hook": "order-sign", "hookInstance": "h1", "context": "p1"},
    {"hook": "order-sign", "hookInstance": "h1", "context": {"patientId": "p1"}},  # no draftOrders
    {"hook": "order-sign", "hookInstance": "h1", "context": {"patientId": "p1", "draftOrders": []},
     "fhirAuthorization": {"access_token": "t", "token_type": "Bearer"}},  # no fhirServer
    ["not", "an", "object"],
    {"hook": "order-sign", "hookInstance": "h1\n2026-06-02 [INFO] forged", "context": {"patientId": "p1",
                                                                                  "draftOrders": []}},
    {"hook": "order-sign", "hookInstance": "h1\u2028forged", "context": {"patientId": "p1", "draftOrders": []}},
])
def test_schema_violation_is_400(client, body):
    status, outcome = post(client, "/cds-services/hetrombopag-order-sign", body)
    assert status == 400 and "schema" in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize("path,body", [
    ("/cds-services/hetrombopag-order-sign",
     b'{"hook": "order-sign", "hookInstance": "\\ud800", "context": {"patientId": "p1", "draftOrders": []}}'),
    ("/cds-services/hetrombopag-order-sign",  # the same surrogate as raw bytes, which json.loads lets through
     b'{"hook": "order-sign", "hookInstance": "\xed\xa0\x80", "context": {"patientId": "p1", "draftOrders": []}}'),
    ("/cds-services/hetrombopag-order-sign/feedback",
     b'{"feedback": [{"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-06-02T10:00:00Z",'
     b' "overrideReason": {"userComment": "\\udfff"}}]}'),
])
def test_a_string_that_is_not_unicode_text_is_400(client, path, body):
    """A lone surrogate is valid JSON but cannot be stored or logged as UTF-8: refused, never a 500."""
    status, outcome = post(client, path, body)
    assert status == 400 and "surrogate" in outcome["issue"][0]["diagnostics"]


def test_a_surrogate_pair_is_text(client):
    body = (b'{"hook": "order-sign", "hookInstance": "\\ud83d\\ude00",'
            b' "context": {"patientId": "p1", "draftOrders": []}}')
    assert post(client, "/cds-services/hetrombopag-order-sign", body) == (200, {"cards": []})


def test_unknown_service_is_404(client):
    assert post(client, "/cds-services/no-such-service", order_sign_request("p1", []))[0] == 404
    assert post(client, "/cds-services/no-such-service/feedback", {"feedback": []})[0] == 404


def test_get_on_a_service_is_405(client):
    response = client.get("/cds-services/hetrombopag-order-sign")
    assert response.status_code == 405
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert "POST" in response.headers["Allow"]


def test_body_too_large_is_413(make_app):
    client = make_app(MAX_CONTENT_LENGTH=2048).test_client()
    body = order_sign_request("p1", [hetrombopag_order(f"d{i}", "p1", 5, "draft", TODAY) for i in range(20)])
    assert post(client, "/cds-services/hetrombopag-order-sign", body)[0] == 413


def test_missing_data_without_fhir_server_is_412_naming_it(client):
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": "p1"},
            "prefetch": {"patient": {"resourceType": "Patient", "id": "p1"}}}
    status, outcome = post(client, "/cds-services/hetrombopag-patient-view", body)
    assert status == 412
    diagnostics = outcome["issue"][0]["diagnostics"]
    assert "'platelets'" in diagnostics and "no fhirServer" in diagnostics
    assert "'patient'" not in diagnostics, "the patient was supplied"


# --- order hooks about other drugs --------------------------------------------------------------


def test_order_hook_without_our_drug_answers_empty_cards_and_fetches_nothing(client, fhir):
    fhir.reset(patient_record(TODAY))
    other = {"resourceType": "MedicationRequest", "id": "amox", "status": "draft", "intent": "order",
             "medicationCodeableConcept": {"text": "Amoxicillin 250 mg"}, "subject": {"reference": "Patient/p1"}}
    for hook in ("order-sign", "order-select"):
        body = order_sign_request("p1", [other], fhirServer=fhir.url,
                                  fhirAuthorization={"access_token": "t0k", "token_type": "Bearer"})
        body["hook"] = hook
        response = client.post(f"/cds-services/hetrombopag-{hook}", json=body)
        assert response.status_code == 200
        assert response.get_json() == {"cards": []}
        assert response.data.replace(b" ", b"").strip() == b'{"cards":[]}'
    assert fhir.requests == []


# --- our drug: the whole path -------------------------------------------------------------------


def test_order_sign_for_our_drug_fetches_and_answers_conformant_cards(client, fhir, app):
    fhir.reset(patient_record(TODAY))
    draft = hetrombopag_order("draft-1", "p1", 5, "draft", TODAY)
    body = order_sign_request("Patient/p1", [draft], fhirServer=fhir.url,
                              fhirAuthorization={"access_token": "t0k", "token_type": "Bearer"})
    status, answer = post(client, "/cds-services/hetrombopag-order-sign", body)
    assert status == 200
    assert fhir.requests, "the data was fetched from the FHIR server"
    assert len({c["source"]["topic"]["code"] for c in answer["cards"]}) == len(answer["cards"])
    for card in answer["cards"]:
        provenance = card["extension"]["cdsrules.provenance"]
        assert provenance["ruleset"] == "hetrombopag" and provenance["version"]
        assert f"ruleset hetrombopag {provenance['version']}" in card["detail"]
    (row,) = [r for r in app.extensions["cdsrules"].store.audit_rows() if r["hook_instance"] == body["hookInstance"]]
    assert row["hook_instance"] == body["hookInstance"] and row["ruleset"] == "hetrombopag"
    assert row["patient_id"] == "p1"
    assert json.loads(row["cards"]) == [{"uuid": c["uuid"], "topic": c["source"]["topic"]["code"]}
                                        for c in answer["cards"]]


def test_prefetch_filled_by_the_client_needs_no_fetch(client, fhir, app):
    fhir.reset(patient_record(TODAY))
    templates = app.extensions["cdsrules"].services["hetrombopag-patient-view"].prefetch
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/dr1", "patientId": "p1"},
            "prefetch": prefetch_for(templates, fhir, "p1")}
    fhir.requests.clear()
    assert post(client, "/cds-services/hetrombopag-patient-view", body)[0] == 200
    assert fhir.requests == []


def topics(answer: dict) -> list[str]:
    return sorted(c["source"]["topic"]["code"] for c in answer["cards"])


def test_dose_variants_of_real_clients_give_the_same_cards(client, fhir):
    fhir.reset(patient_record(TODAY, platelets=40))
    r4 = hetrombopag_order("draft-1", "p1", 10, "draft", TODAY)
    as_object = json.loads(json.dumps(r4))
    as_object["dosageInstruction"][0]["doseAndRate"] = r4["dosageInstruction"][0]["doseAndRate"][0]
    stu3 = json.loads(json.dumps(r4))
    stu3["dosageInstruction"][0]["doseQuantity"] = stu3["dosageInstruction"][0].pop("doseAndRate")[0]["doseQuantity"]
    answers = []
    for draft in (r4, as_object, stu3):
        body = order_sign_request("p1", [draft], fhirServer=fhir.url)
        status, answer = post(client, "/cds-services/hetrombopag-order-sign", body)
        assert status == 200
        answers.append(topics(answer))
    assert answers[0] and answers[0] == answers[1] == answers[2]
    assert "dose-above-max" in answers[0], "the 10 mg draft was read in every shape (maximum 7.5 mg)"


def test_deprecated_medication_prescribe_is_answered(client, fhir):
    fhir.reset(patient_record(TODAY, platelets=40))
    ours = hetrombopag_order("draft-1", "p1", 5, "draft", TODAY)
    body = {"hook": "medication-prescribe", "hookInstance": str(uuid.uuid4()), "fhirServer": fhir.url,
            "context": {"userId": "Practitioner/dr1", "patientId": "p1", "medications": [ours]}}
    status, answer = post(client, "/cds-services/hetrombopag-order-sign", body)
    assert status == 200 and "titration-increase" in topics(answer)
    body["context"]["medications"] = [{"resourceType": "MedicationRequest", "id": "x",
                                       "medicationCodeableConcept": {"text": "Ibuprofen"}}]
    assert post(client, "/cds-services/hetrombopag-order-select", body) == (200, {"cards": []})


def test_suggestions_carry_whole_medication_requests(client, fhir):
    fhir.reset(patient_record(TODAY, platelets=40))
    draft = hetrombopag_order("draft-1", "p1", 5, "draft", TODAY)
    status, answer = post(client, "/cds-services/hetrombopag-order-sign",
                          order_sign_request("p1", [draft], fhirServer=fhir.url))
    (card,) = [c for c in answer["cards"] if c["source"]["topic"]["code"] == "titration-increase"]
    (suggestion,) = card["suggestions"]
    (action,) = suggestion["actions"]
    resource = action["resource"]
    assert action["type"] == "update" and resource["id"] == "draft-1" and resource["status"] == "draft"
    dose = resource["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]
    assert dose == {"value": 7.5, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}
    assert resource["dosageInstruction"][0]["timing"]["repeat"] == {"frequency": 1, "period": 1, "periodUnit": "d"}
    assert card["selectionBehavior"] == "at-most-one" and suggestion["isRecommended"] is True

    fhir.reset(patient_record(TODAY, platelets=120))
    status, answer = post(client, "/cds-services/hetrombopag-patient-view",
                          {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": fhir.url,
                           "context": {"patientId": "p1"}})
    stops = [a for c in answer["cards"] for s in c.get("suggestions", []) for a in s["actions"]
             if a["resource"].get("status") == "stopped"]
    assert stops and stops[0]["type"] == "update" and stops[0]["resource"]["id"] == "mr-active"


def test_an_audit_failure_is_a_503_and_counted(make_app):
    app = make_app()
    client = app.test_client()
    store = app.extensions["cdsrules"].store
    failures = client.get("/readyz").get_json()["auditFailures"]  # counted per process here, per server in serve
    with store.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE audit")
    body = order_sign_request("p1", [])
    status, answer = post(client, "/cds-services/hetrombopag-order-sign", body)
    assert status == 503 and answer["resourceType"] == "OperationOutcome"
    assert client.get("/readyz").get_json()["auditFailures"] == failures + 1


# --- feedback -----------------------------------------------------------------------------------


def issued_card(client, fhir, service_id: str) -> str:
    """The uuid of a card the service issued in a call just made (feedback is taken only for those)."""
    fhir.reset(patient_record(TODAY, platelets=40))
    hook = service_id.removeprefix("hetrombopag-")
    draft = hetrombopag_order("draft-1", "p1", 5, "draft", TODAY)
    body = {**order_sign_request("p1", [draft], fhirServer=fhir.url), "hook": hook}
    if hook == "patient-view":
        body["context"] = {"patientId": "p1"}
    status, answer = post(client, f"/cds-services/{service_id}", body)
    assert status == 200 and answer["cards"]
    return answer["cards"][0]["uuid"]


def test_feedback_is_stored_once(client, app, fhir):
    feedback = json.loads((EXTERNAL / "hl7-cds-hooks-2.0.1/feedback-accepted.json").read_text())
    item = feedback["feedback"][0]
    item["card"] = issued_card(client, fhir, "hetrombopag-order-sign")
    for _ in range(2):
        response = client.post("/cds-services/hetrombopag-order-sign/feedback", json=feedback)
        assert response.status_code == 200 and response.get_json() == {}
    with sqlite3.connect(app.config["DB_URL"].removeprefix("sqlite:///")) as db:
        rows = db.execute("SELECT service, card, outcome FROM feedback WHERE card = ?", (item["card"],)).fetchall()
    assert rows == [("hetrombopag-order-sign", item["card"], item["outcome"])]


@pytest.mark.parametrize("name", ["feedback-overridden.json", "feedback-overridden-with-reason.json"])
def test_feedback_examples_are_accepted(client, fhir, name):
    feedback = json.loads((EXTERNAL / "hl7-cds-hooks-2.0.1" / name).read_text())
    feedback["feedback"][0]["card"] = issued_card(client, fhir, "hetrombopag-patient-view")
    assert post(client, "/cds-services/hetrombopag-patient-view/feedback", feedback)[0] == 200


def test_invalid_feedback_is_400(client):
    bad = {"feedback": [{"card": "c1", "outcome": "ignored", "outcomeTimestamp": "2025-01-01T00:00:00Z"}]}
    assert post(client, "/cds-services/hetrombopag-patient-view/feedback", bad)[0] == 400
    assert post(client, "/cds-services/hetrombopag-patient-view/feedback", b"nope")[0] == 400


# --- health and CORS ----------------------------------------------------------------------------


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready" and any(r.startswith("hetrombopag@") for r in ready["rulesets"])


def test_cors_preflight_is_answered_without_a_token(client):
    response = client.options(
        "/cds-services/hetrombopag-order-sign",
        headers={"Origin": "https://ehr.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"})
    assert response.status_code == 200
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert response.headers["Access-Control-Allow-Origin"] in ("*", "https://ehr.example")


def test_examples_directory_requests_are_valid(client, fhir):
    for path in sorted(Path(__file__).resolve().parent.parent.joinpath("examples").glob("*-request.json")):
        document = json.loads(path.read_text())
        status, _ = post(client, f"/cds-services/hetrombopag-{document['hook']}", document)
        assert status == 200, path.name


# --- hostile input never makes a 500 -------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    hook=st.sampled_from(["patient-view", "order-select", "order-sign", "medication-prescribe", "x"]),
    context=st.dictionaries(st.sampled_from(["patientId", "userId", "draftOrders", "selections", "medications",
                                             "encounterId"]), json_values, max_size=5),
    prefetch=st.one_of(st.none(), st.dictionaries(st.sampled_from(["patient", "platelets", "medications", "x"]),
                                                  json_values, max_size=3)),
)
def test_arbitrary_requests_never_make_a_500(client, hook, context, prefetch):
    body = {"hook": hook, "hookInstance": "h", "context": context, "prefetch": prefetch}
    for service in ("hetrombopag-order-sign", "hetrombopag-patient-view"):
        status, _ = post(client, f"/cds-services/{service}", body)
        assert status in (200, 400, 412)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dose=json_values, unit=json_values, text=json_values)
def test_odd_draft_orders_of_our_drug_never_make_a_500(client, dose, unit, text):
    draft = hetrombopag_order("d1", "p1", 5, "draft", TODAY)
    draft["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"].update(value=dose, unit=unit)
    draft["dosageInstruction"][0]["text"] = text
    prefetch = {key: None for key in client.application.extensions["cdsrules"].services[
        "hetrombopag-order-sign"].prefetch}
    body = order_sign_request("p1", [draft], prefetch=prefetch)
    assert post(client, "/cds-services/hetrombopag-order-sign", body)[0] == 200
