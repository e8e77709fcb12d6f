"""The webhook's parts on their own: request normalisation, the five prefetch states, card helpers, the store
and the conformance checker (which must catch the non-conformant responses among the external fixtures)."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from store import Store
from tests.cds_conformance import problems
from tests.conftest import EXTERNAL, TOKEN
from webhook.cards import shorten, strip_empty
from webhook.outcome import HookError
from webhook.prefetch import ABSENT, DATA, EMPTY, ERROR, NULL, Fetcher, fill, gather, state
from webhook.request import (
    _branch_hooks,
    _depth_exceeds,
    _validator,
    nesting_depth,
    normalise_resource,
    parse_hook_request,
    patient_id,
    schema,
)

pytestmark = pytest.mark.timeout(30)


def external(name: str):
    return json.loads((EXTERNAL / name).read_text())


def request_body(hook="order-sign", **context):
    return json.dumps({"hook": hook, "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                       "context": {"userId": "Practitioner/1", "patientId": "Patient/p1", **context}}).encode()


# --- request ------------------------------------------------------------------------------


def test_patient_id_prefix_is_dropped():
    assert patient_id("Patient/123") == "123"
    assert patient_id("123") == "123"


def test_dose_and_rate_object_becomes_an_array():
    context = external("hl7-cds-hooks-library/order-select-context-r4.json")["context"]
    order = next(r["resource"] for r in context["draftOrders"]["entry"]
                 if r["resource"]["resourceType"] == "MedicationRequest")
    assert isinstance(order["dosageInstruction"][0]["doseAndRate"], dict)
    normalised = normalise_resource(order)
    assert normalised["dosageInstruction"][0]["doseAndRate"] == [order["dosageInstruction"][0]["doseAndRate"]]
    assert isinstance(order["dosageInstruction"][0]["doseAndRate"], dict), "the input is not changed"


def test_stu3_dose_quantity_moves_into_dose_and_rate():
    context = external("hl7-cds-hooks-library/order-sign-context-r4.json")["context"]
    order = next(r["resource"] for r in context["draftOrders"]["entry"]
                 if r["resource"]["resourceType"] == "MedicationRequest")
    dose = order["dosageInstruction"][0]["doseQuantity"]
    dosage = normalise_resource(order)["dosageInstruction"][0]
    assert "doseQuantity" not in dosage
    assert dosage["doseAndRate"] == [{"doseQuantity": dose}]


def test_draft_orders_without_bundle_type_and_as_plain_array():
    order = {"resourceType": "MedicationRequest", "id": "m1"}
    untyped = parse_hook_request(request_body(draftOrders={"resourceType": "Bundle", "entry": [{"resource": order}]}),
                                 "order-sign")
    plain = parse_hook_request(request_body(draftOrders=[order]), "order-sign")
    assert untyped.draft_orders == plain.draft_orders == (order,)
    assert untyped.patient_id == "p1"


def test_medication_prescribe_is_read_as_an_order_hook():
    order = {"resourceType": "MedicationRequest", "id": "m1"}
    parsed = parse_hook_request(request_body("medication-prescribe", medications=[order]), "order-select")
    assert parsed.hook == "order-select" and parsed.sent_hook == "medication-prescribe"
    assert parsed.is_order_hook and parsed.draft_orders == (order,)


def test_order_select_focuses_on_the_selections():
    orders = [{"resourceType": "MedicationRequest", "id": "a"}, {"resourceType": "MedicationRequest", "id": "b"}]
    parsed = parse_hook_request(request_body("order-select", selections=["MedicationRequest/b"],
                                             draftOrders=orders), "order-select")
    assert [o["id"] for o in parsed.draft_orders] == ["b"]


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"hook": "order-sign"}', request_body("order-sign")])
def test_bad_requests_are_400(body):
    with pytest.raises(HookError) as raised:
        parse_hook_request(body, "order-sign")
    assert raised.value.status == 400


def test_schema_errors_never_echo_the_access_token():
    body = json.loads(request_body("patient-view"))
    body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "MAC"}
    body["fhirServer"] = "https://fhir.example.org"
    with pytest.raises(HookError) as raised:
        parse_hook_request(json.dumps(body).encode(), "patient-view")
    assert TOKEN not in raised.value.diagnostics


def _tree_depth(value) -> int:
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
    return 0 if children is None else 1 + max(map(_tree_depth, children), default=0)


# Strings full of what could fool a byte-level reading: brackets, quotes, backslashes, escapes, non-ASCII.
_tricky_text = st.text(alphabet=st.sampled_from(list('[]{}"\\/ab\u00e9\u2028\n\t')), max_size=8)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | _tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_tricky_text, inner, max_size=3), max_leaves=30)


@given(_json_values, st.booleans())
def test_nesting_depth_read_from_bytes_equals_the_depth_of_the_tree(value, ascii_only):
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert nesting_depth(body) == _tree_depth(value)
    assert _depth_exceeds(value, 3) == (_tree_depth(value) > 3)


def test_nesting_depth_never_loops_on_brackets_that_do_not_balance():
    with pytest.raises(ValueError):
        nesting_depth(b'{"a": [[1]}')


def _every_request_fixture() -> list[Path]:
    return sorted(p for p in EXTERNAL.rglob("*.json")
                  if isinstance(json.loads(p.read_text()), dict) and "hook" in json.loads(p.read_text()))


_BROKEN_REQUESTS = [
    {"hook": "order-sign", "hookInstance": "x", "context": {"patientId": "p1"}},  # no draftOrders
    {"hook": "order-sign", "hookInstance": "x", "context": {"patientId": "p1", "draftOrders": {"entry": []}}},
    {"hook": "order-select", "hookInstance": "x", "context": {"patientId": "p1", "draftOrders": [{"id": "a"}]}},
    {"hook": "patient-view", "hookInstance": "x", "context": {"patientId": ""}},
    {"hook": "medication-prescribe", "hookInstance": "x", "context": {"patientId": "p1", "medications": 3}},
    {"hook": ["order-sign"], "hookInstance": "x", "context": {}},
    {"hook": "no-such-hook", "hookInstance": "x", "context": []},
    {"hook": "patient-view", "hookInstance": "x", "context": {"patientId": "p1"},
     "fhirAuthorization": {"access_token": "t", "token_type": "Bearer"}},  # fhirAuthorization without fhirServer
]


@pytest.mark.parametrize("document", [json.loads(p.read_text()) for p in _every_request_fixture()] + _BROKEN_REQUESTS)
def test_the_narrowed_validator_judges_a_request_as_the_whole_schema_does(document):
    whole = jsonschema.Draft202012Validator(schema())
    hook = document.get("hook") if isinstance(document.get("hook"), str) else None
    narrowed = _validator(None, hook if hook in _branch_hooks() else None)
    assert narrowed.is_valid(document) == whole.is_valid(document)
    assert {tuple(e.absolute_path) for e in narrowed.iter_errors(document)} \
        <= {tuple(e.absolute_path) for e in whole.iter_errors(document)} | {()}


# --- prefetch -------------------------------------------------------------------------------


def test_the_five_prefetch_states():
    assert state(None, present=False) == ABSENT
    assert state(None) == NULL
    assert state({"resourceType": "Patient", "id": "1"}) == DATA
    assert state({"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {}}]}) == DATA
    assert state({"resourceType": "Bundle", "type": "searchset"}) == EMPTY
    assert state({"resourceType": "OperationOutcome", "issue": []}) == ERROR
    assert state("123") == ERROR  # the spec's own example sends a bare string


def test_tokens_are_filled_from_the_context():
    parsed = parse_hook_request(request_body("patient-view"), "patient-view")
    assert fill("Observation?patient={{context.patientId}}&_count=10", parsed) == "Observation?patient=p1&_count=10"
    assert fill("Practitioner/{{userPractitionerId}}", parsed) == "Practitioner/1"
    assert fill("Encounter/{{context.encounterId}}", parsed) is None


def test_gather_fetches_absent_and_error_keys_with_the_bearer_token(fhir):
    fhir.reset([{"resourceType": "Patient", "id": "p1"}])
    body = json.loads(request_body("patient-view"))
    body.update(fhirServer=fhir.url, fhirAuthorization={"access_token": TOKEN, "token_type": "Bearer"},
                prefetch={"nothing": None, "empty": {"resourceType": "Bundle", "type": "searchset"},
                          "failed": {"resourceType": "OperationOutcome", "issue": []}})
    parsed = parse_hook_request(json.dumps(body).encode(), "patient-view")
    templates = {"nothing": "Condition?patient={{context.patientId}}",
                 "empty": "Procedure?patient={{context.patientId}}",
                 "failed": "Observation?patient={{context.patientId}}",
                 "patient": "Patient/{{context.patientId}}"}
    gathered = gather(templates, parsed, Fetcher(2.0), lambda url: True)
    assert sorted(gathered.fetched) == ["failed", "patient"]
    assert gathered.payloads["patient"]["id"] == "p1"
    assert gathered.payloads["nothing"] is None
    assert gathered.supplied == {"Condition", "Procedure", "Observation", "Patient"}
    assert sorted(r["path"] for r in fhir.requests) == ["/fhir/Observation?patient=p1", "/fhir/Patient/p1"]
    assert {r["headers"]["Authorization"] for r in fhir.requests} == {f"Bearer {TOKEN}"}


def test_gather_answers_412_naming_what_could_not_be_had(fhir):
    fhir.fail_types.add("Observation")
    body = json.loads(request_body("patient-view"))
    body.update(fhirServer=fhir.url)
    parsed = parse_hook_request(json.dumps(body).encode(), "patient-view")
    with pytest.raises(HookError) as raised:
        gather({"labs": "Observation?patient={{context.patientId}}"}, parsed, Fetcher(2.0), lambda url: True)
    assert raised.value.status == 412 and "'labs'" in raised.value.diagnostics


def test_gather_refuses_a_fhir_server_that_is_not_allowed(fhir):
    body = json.loads(request_body("patient-view"))
    body.update(fhirServer=fhir.url)
    parsed = parse_hook_request(json.dumps(body).encode(), "patient-view")
    with pytest.raises(HookError) as raised:
        gather({"labs": "Observation?patient={{context.patientId}}"}, parsed, Fetcher(2.0), lambda url: False)
    assert raised.value.status == 412
    assert fhir.requests == []


# --- cards ----------------------------------------------------------------------------------


def test_strip_empty_removes_every_empty_value():
    assert strip_empty({"a": None, "b": "", "c": [], "d": {}, "e": [{"f": None}], "g": 0, "h": False}) == \
        {"g": 0, "h": False}


def test_strip_empty_keeps_false_values_and_drops_what_empties_as_it_is_stripped():
    card = {"a": 0.0, "b": [0, "", None, [], {"c": [{"d": ""}]}, "e"], "f": {"g": {"h": [None]}}, "i": " "}
    assert strip_empty(card) == {"a": 0.0, "b": [0, "e"], "i": " "}


def test_shorten_keeps_summaries_under_140_characters():
    text = "Hetrombopag " + "word " * 60
    short = shorten(text)
    assert len(short) < 140 and short.endswith("…")
    assert shorten("short summary") == "short summary"


# --- store ----------------------------------------------------------------------------------


def test_feedback_is_idempotent_and_jti_replay_is_detected(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'sub' / 'store.db'}")
    store.create_tables()
    item = {"card": "c1", "outcome": "accepted", "outcomeTimestamp": "2025-06-02T10:00:00Z",
            "acceptedSuggestions": [{"id": "s1"}]}
    assert store.add_feedback("svc", item) is True
    assert store.add_feedback("svc", item) is False
    assert len(store.feedback_rows()) == 1
    assert store.remember_jti("iss", "j1", 2**31) is True
    assert store.remember_jti("iss", "j1", 2**31) is False
    assert store.remember_jti("other-iss", "j1", 2**31) is True


def test_a_relative_sqlite_path_gets_its_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Store("sqlite:///var/cdsrules.db")
    store.create_tables()
    assert (tmp_path / "var" / "cdsrules.db").exists() and store.ping()
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


# --- the checker itself ---------------------------------------------------------------------


def test_checker_accepts_the_spec_examples_except_for_our_stricter_uuid_rule():
    assert problems(external("hl7-cds-hooks-2.0.1/response-empty-cards.json")) == []
    # The spec makes card.uuid optional; we require it on every card, so feedback can always name the card.
    assert problems(external("hl7-cds-hooks-2.0.1/response-cards.json")) == \
        ["$.cards[1].uuid: missing or not a UUID (None)"]


@pytest.mark.parametrize("name, expected", [
    ("hl7-cds-hooks-2.0.1/response-cards-autolaunchable.json", "indicator"),
    ("hl7-cds-hooks-2.0.1/response-system-actions.json", "description"),
])
def test_checker_catches_the_non_conformant_examples(name, expected):
    assert any(expected in p for p in problems(external(name)))


def test_checker_catches_bad_uuids_and_bare_arrays():
    cards = external("inferno-davinci-crd-test-kit/cards-array.spec-fixture-valid-cards.json")
    assert problems(cards)
    assert any("uuid" in p for p in problems({"cards": cards}))
    assert any("empty value" in p for p in problems({"cards": [{"summary": ""}]}))


# --- cards from decisions -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ruleset():
    from engine.versions import load_catalog
    from tests.conftest import RULES_DIR

    return load_catalog(RULES_DIR).latest_released("hetrombopag")


def evaluation_with(*decisions):
    from engine.model import Evaluation

    return Evaluation(ruleset_id="hetrombopag", version="1.0.0", evaluation_date="2026-06-02", facts={},
                      decisions=list(decisions), trace=[], missing={})


def decision(topic="dose-mismatch", **suggestion):
    from engine.model import Decision, Suggestion

    return Decision(rule_id="r1", topic=topic, indicator="warning", summary="Summary " * 30, detail="Detail",
                    suggestion=Suggestion(**suggestion) if suggestion else None,
                    override_reasons=[{"system": "urn:x", "code": "judgment"}])


def test_a_dose_above_the_maximum_is_never_suggested(ruleset):
    from webhook.cards import build_cards

    cards = build_cards(evaluation_with(decision(action="create", label="Start", daily_dose=10)), ruleset, "p1",
                        [], [])
    (card,) = cards
    assert "suggestions" not in card and "selectionBehavior" not in card
    assert len(card["summary"]) < 140 and card["overrideReasons"] == [
        {"system": "urn:x", "code": "judgment", "display": "judgment"}]
    ok = build_cards(evaluation_with(decision(action="create", label="Start", daily_dose=7.5)), ruleset, "p1", [], [])
    assert ok[0]["suggestions"][0]["actions"][0]["resource"]["dosageInstruction"][0]["doseAndRate"][0][
        "doseQuantity"]["value"] == 7.5


def test_an_order_that_cannot_be_found_leaves_the_card_without_suggestion(ruleset):
    from webhook.cards import build_cards

    cards = build_cards(evaluation_with(decision(action="update", label="Change", daily_dose=5, order_id="gone"),
                                        decision(topic="stop", action="stop", label="Stop", order_id="gone")),
                        ruleset, "p1", [], [])
    assert [c["source"]["topic"]["code"] for c in cards] == ["dose-mismatch", "stop"]
    assert all("suggestions" not in c for c in cards)


def test_each_topic_appears_once(ruleset):
    from webhook.cards import build_cards

    cards = build_cards(evaluation_with(decision(), decision(), decision(topic="other")), ruleset, "p1", [], [])
    assert [c["source"]["topic"]["code"] for c in cards] == ["dose-mismatch", "other"]
    assert all(problems({"cards": [c]}) == [] for c in cards)


def test_suggestions_leave_the_orders_they_were_made_from_as_they_were(ruleset):
    import copy

    from webhook.cards import build_cards

    draft = {"resourceType": "MedicationRequest", "id": "d1", "status": "draft", "intent": "order",
             "subject": {"reference": "Patient/p1"},
             "dosageInstruction": [{"text": "5 mg daily", "timing": {"repeat": {"boundsDuration": {"value": 6}}},
                                    "doseAndRate": [{"doseQuantity": {"value": 5, "unit": "mg"}}]}]}
    active = {**copy.deepcopy(draft), "id": "a1", "status": "active"}
    sent = copy.deepcopy([draft, active])
    cards = build_cards(evaluation_with(decision(action="update", label="Change", daily_dose=2.5, order_id="d1"),
                                        decision(topic="stop", action="stop", label="Stop", order_id="a1")),
                        ruleset, "p1", [draft], [active])
    update, stop = (c["suggestions"][0]["actions"][0]["resource"] for c in cards)
    assert update["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 2.5
    assert update["dosageInstruction"][0]["timing"]["repeat"]["boundsDuration"] == {"value": 6}
    assert stop["status"] == "stopped"
    assert [draft, active] == sent, "the request's orders are not changed by the suggestions made from them"


def test_hold_and_restart_change_the_named_order_status_and_restart_its_dose(ruleset):
    from engine.orders import OrderDetails, medication_request
    from webhook.cards import build_cards

    active = medication_request(ruleset.medication, 5, OrderDetails("Patient/p1", "active", "mr1"))
    held = medication_request(ruleset.medication, 5, OrderDetails("Patient/p1", "on-hold", "mr2"))
    cards = build_cards(evaluation_with(decision(topic="hold", action="hold", label="Hold", order_id="mr1"),
                                        decision(topic="restart", action="restart", label="Restart", daily_dose=2.5,
                                                 order_id="mr2")),
                        ruleset, "p1", [], [active, held])
    hold, restart = (c["suggestions"][0]["actions"][0] for c in cards)
    assert hold["type"] == "update" and hold["resource"]["status"] == "on-hold" and hold["resource"]["id"] == "mr1"
    assert hold["resource"]["dosageInstruction"] == active["dosageInstruction"]
    assert restart["resource"]["status"] == "active" and restart["resource"]["id"] == "mr2"
    assert restart["resource"]["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 2.5
