"""Hostile hook requests: mutated real requests (wrong types, huge numbers, negative weights, dates in the future
or unreadable, unknown units, duplicated resources, deep nesting, unicode). Never a 500, never a crash.

The default run sends FUZZ_EXAMPLES requests (1,000 in CI, the same ones every run under the repeatable profile);
`make soak` sends 30,000 fresh ones.
"""
from __future__ import annotations

import copy
import json
import os
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import TODAY, hetrombopag_order, order_sign_request, patient_record
from tests.helpers import json_paths, replace_at

pytestmark = pytest.mark.timeout(600)
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))
ALLOWED = {200, 400, 404, 412, 413}

HOSTILE = st.one_of(
    st.none(), st.booleans(), st.text(max_size=30), st.just(""), st.just("\u202e\u0000\ufffd😀"),
    st.integers(min_value=-(10 ** 30), max_value=10 ** 30), st.floats(allow_nan=True, allow_infinity=True),
    st.just(-70.0), st.just(0), st.just(500.0), st.just(1e308),
    st.sampled_from(["2999-01-01", "1900-02-30", "not-a-date", "2026-13-45T99:99:99Z", "-0001-01-01"]),
    st.sampled_from(["kg", "stone", "10^9/L", "/uL", "mg/dL", "furlongs", "", "%"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def base_requests(services: dict) -> list[tuple[str, dict]]:
    record = patient_record(TODAY, platelets=40)
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in record]}
    empty = {"resourceType": "Bundle", "type": "searchset", "entry": []}

    def prefetch(service: str) -> dict:  # the whole record once, under the first key; the others answered empty
        keys = list(services[service].prefetch)
        return {key: bundle if i == 0 else empty for i, key in enumerate(keys)}

    view = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/dr1", "patientId": "p1"},
            "prefetch": prefetch("hetrombopag-patient-view")}
    sign = order_sign_request("p1", [hetrombopag_order("d1", "p1", 5, "draft", TODAY)],
                              prefetch=prefetch("hetrombopag-order-sign"))
    return [("hetrombopag-patient-view", view), ("hetrombopag-order-sign", sign)]


@pytest.fixture(scope="module")
def fuzz_client(app):
    client = app.test_client()
    bases = base_requests(app.extensions["cdsrules"].services)
    return client, [(service, body, list(json_paths(body))) for service, body in bases]


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_requests_never_make_a_500(fuzz_client, data):
    client, bases = fuzz_client
    service, base, all_paths = bases[data.draw(st.integers(0, len(bases) - 1))]
    body = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["replace", "replace", "duplicate", "nest"]))
        path = data.draw(st.sampled_from(all_paths))
        try:
            if kind == "replace":
                body = replace_at(body, path, data.draw(HOSTILE))
            elif kind == "duplicate":
                entries = body["prefetch"][next(iter(body["prefetch"]))]["entry"]
                entries.extend(copy.deepcopy(entries[: data.draw(st.integers(1, 5))]))
            else:
                depth = data.draw(st.sampled_from([50, 500, 5000]))
                nested = {}
                for _ in range(depth):
                    nested = {"a": nested}
                body = replace_at(body, path, nested)
        except (KeyError, IndexError, TypeError, StopIteration, AttributeError, RecursionError):
            continue  # the path went away under an earlier mutation
    try:
        payload = json.dumps(body, allow_nan=True)
    except (RecursionError, ValueError):
        return
    response = client.post(f"/cds-services/{service}", data=payload, content_type="application/json")
    assert response.status_code in ALLOWED, response.get_data(as_text=True)[:500]
    assert response.is_json


@pytest.mark.parametrize("depth", [65, 900, 100_000])
def test_json_nested_too_deeply_is_400(app, depth):
    payload = "[" * depth + "]" * depth
    response = app.test_client().post("/cds-services/hetrombopag-patient-view", data=payload,
                                      content_type="application/json")
    assert response.status_code == 400
