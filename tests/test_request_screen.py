"""The request schema's fast screen (jsonschema-rs) agrees with jsonschema on every request: valid ones from real
clients and our own, and each of them broken at every place with hostile values.

A request the screen passes is answered without jsonschema looking at it, so the screen must never pass what
jsonschema refuses; one it refuses is looked at again by jsonschema, which names the violation."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import TODAY, hetrombopag_order, order_sign_request, patient_record
from tests.helpers import json_paths, replace_at
from webhook import request as hook_request

EXTERNAL = Path(__file__).parent / "fixtures" / "external"
HOSTILE = st.one_of(
    st.none(), st.booleans(), st.text(max_size=12), st.just(""), st.just("\u0000\u2028x"), st.just("x\ud800"),
    st.integers(min_value=-(10 ** 30), max_value=10 ** 30), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["Patient/", "Patient/p 1", "ftp://x", "http://a b", "2026-01-01T00:00:00",
                     "2026-01-01T24:00:00Z", "bearer", "Bearer x"]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def _external_requests() -> list[dict]:
    found = []
    for path in sorted(EXTERNAL.rglob("*.json")):
        document = json.loads(path.read_text())
        if isinstance(document, dict) and "hookInstance" in document:
            found.append(document)
    return found


def _own_requests() -> list[dict]:
    record = patient_record(TODAY, platelets=40)
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in record]}
    sign = order_sign_request("p1", [hetrombopag_order("d1", "p1", 5, "draft", TODAY)], prefetch={"all": bundle})
    sign["fhirServer"] = "https://fhir.example.org/r4"
    sign["fhirAuthorization"] = {"access_token": "t", "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds-service"}
    view = {"hook": "patient-view", "hookInstance": "5a1b0c3e-1111-4a2b-9c3d-2e4f5a6b7c8d",
            "context": {"userId": "Practitioner/dr1", "patientId": "p1"}, "prefetch": {"all": bundle}}
    return [sign, view]


REQUESTS = _external_requests() + _own_requests()


def _verdicts(document: object) -> tuple[bool, bool]:
    """(the screen passes it, jsonschema finds nothing wrong), for the validator the service would choose."""
    hook = document.get("hook") if isinstance(document, dict) else None
    hook = hook if isinstance(hook, str) and hook in hook_request._branch_hooks() else None
    screened = hook_request.passes_screen(document, None, hook)
    checked = jsonschema.exceptions.best_match(hook_request._validator(None, hook).iter_errors(document)) is None
    return screened, checked


def test_the_corpus_holds_real_and_own_requests():
    assert len(_external_requests()) >= 5
    assert {r["hook"] for r in REQUESTS} >= {"order-sign", "order-select", "patient-view"}


@pytest.mark.parametrize("document", REQUESTS, ids=lambda d: d["hook"])
def test_the_screen_agrees_on_every_request_as_sent(document):
    screened, checked = _verdicts(document)
    assert screened == checked


@settings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_screen_agrees_on_every_request_broken_anywhere(data):
    document = copy.deepcopy(data.draw(st.sampled_from(REQUESTS)))
    path = data.draw(st.sampled_from([p for p in json_paths(document) if len(p) <= 6]))
    broken = replace_at(document, path, data.draw(HOSTILE))
    screened, checked = _verdicts(broken)
    where = "/".join(map(str, path))
    assert checked or not screened, f"the screen passed what jsonschema refuses, at {where}"
    if _readable(broken):  # what the screen cannot take in (a lone surrogate) it leaves to jsonschema
        assert screened == checked, f"at {where}"


def _readable(document: object) -> bool:
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def test_a_value_the_screen_cannot_take_in_is_left_to_jsonschema():
    document = copy.deepcopy(_own_requests()[1])
    document["hookInstance"] = "x\ud800"
    assert _verdicts(document) == (False, True)


@pytest.mark.parametrize("key", ["hook", "hookInstance", "context"])
def test_a_request_without_a_required_member_is_refused_with_its_name(client, key):
    document = copy.deepcopy(_own_requests()[0])
    del document[key]
    response = client.post("/cds-services/hetrombopag-order-sign", json=document)
    assert response.status_code == 400
    assert key in response.get_json()["issue"][0]["diagnostics"]
