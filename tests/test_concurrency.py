"""8 concurrent clients against the real gunicorn server: zero errors, and every answer identical to the answer
the same request got alone (the durable-rules hazards stay fenced). CONCURRENT_CALLS per client (default 150;
`make soak` runs 10,000)."""
from __future__ import annotations

import copy
import os
import threading
import uuid

import pytest
import requests

from tests.conftest import hetrombopag_order, patient_record, running_server

CALLS = int(os.environ.get("CONCURRENT_CALLS", "150"))
CLIENTS = 8
pytestmark = pytest.mark.timeout(max(120, CALLS))


def scenarios(today, prefetch_keys: dict[str, list[str]]) -> list[tuple[str, dict]]:
    """Patients whose answers differ: increase, stop, eligibility, a draft above the maximum, no cards."""
    empty = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    found = []
    for platelets, on_therapy, draft in ((20, True, None), (120, True, None), (40, False, None), (40, True, 10),
                                         (60, True, 5)):
        record = patient_record(today, platelets=platelets, on_therapy=on_therapy)
        bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in record]}
        if draft is None:
            service = "hetrombopag-patient-view"
            body = {"hook": "patient-view", "context": {"userId": "Practitioner/1", "patientId": "p1"}}
        else:
            service = "hetrombopag-order-sign"
            body = {"hook": "order-sign", "context": {
                "userId": "Practitioner/1", "patientId": "p1",
                "draftOrders": {"resourceType": "Bundle", "type": "collection",
                                "entry": [{"resource": hetrombopag_order("d1", "p1", draft, "draft", today)}]}}}
        keys = prefetch_keys[service]  # the whole record under the first key, the others answered empty
        body["prefetch"] = {key: bundle if i == 0 else empty for i, key in enumerate(keys)}
        found.append((service, body))
    return found


def signature(answer: dict) -> list:
    """The answer without its random parts (uuids)."""
    cards = []
    for card in answer["cards"]:
        actions = [(a["type"], a.get("resource", {}).get("status"),
                    a.get("resource", {}).get("dosageInstruction", [{}])[0].get("doseAndRate", [{}])[0]
                    .get("doseQuantity", {}).get("value"))
                   for s in card.get("suggestions", []) for a in s["actions"]]
        cards.append((card["source"]["topic"]["code"], card["indicator"], card["summary"], actions))
    return sorted(cards)


@pytest.fixture(scope="module")
def server(plain_server):
    return plain_server.base_url


def test_concurrent_clients_get_exactly_the_sequential_answers(server):
    import datetime as dt
    services = requests.get(f"{server}/cds-services", timeout=10).json()["services"]
    cases = scenarios(dt.date.today(), {s["id"]: list(s["prefetch"]) for s in services})

    def ask(session, index):
        service, body = cases[index]
        body = {**copy.deepcopy(body), "hookInstance": str(uuid.uuid4())}
        response = session.post(f"{server}/cds-services/{service}", json=body, timeout=30)
        return response.status_code, signature(response.json()) if response.status_code == 200 else None

    with requests.Session() as session:
        expected = [ask(session, i) for i in range(len(cases))]
    assert all(status == 200 for status, _ in expected)
    assert len({str(sig) for _, sig in expected}) == len(cases), "the scenarios must answer differently"

    failures, done = [], [0]

    def client(offset):
        with requests.Session() as session:
            for n in range(CALLS):
                index = (n + offset) % len(cases)
                try:
                    got = ask(session, index)
                except requests.RequestException as error:
                    failures.append(repr(error))
                    continue
                if got != expected[index]:
                    failures.append((index, got[0]))
                done[0] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and done[0] == CLIENTS * CALLS


def test_a_hook_call_is_answered_at_once_while_drafts_are_slow(tmp_path):
    """One worker, two drafts whose tests never end, then an order-sign call: the worker keeps a thread for the EHR
    (one draft is checked until its time limit, the other is refused at once), and the call is answered as fast as
    ever."""
    import datetime as dt
    import time
    from concurrent.futures import ThreadPoolExecutor

    from engine.sandbox import TIME_LIMIT_SECONDS
    from tests.helpers import slow_draft

    with running_server(tmp_path, "--no-auth", "--workbench", "--workers", "1") as live:
        services = requests.get(f"{live.base_url}/cds-services", timeout=10).json()["services"]
        service, body = scenarios(dt.date.today(), {s["id"]: list(s["prefetch"]) for s in services})[3]

        def hook_call() -> tuple[int, float]:
            started = time.monotonic()
            answer = requests.post(f"{live.base_url}/cds-services/{service}", timeout=60,
                                   json={**body, "hookInstance": str(uuid.uuid4())})
            return answer.status_code, time.monotonic() - started

        def check_draft() -> tuple[requests.Response, float]:
            answer = requests.post(f"{live.base_url}/workbench/check.json", timeout=60,
                                   json={"text": slow_draft(), "ruleset": "hetrombopag"})
            return answer, time.monotonic()

        assert hook_call()[0] == 200  # compiled and warm
        with ThreadPoolExecutor(2) as pool:
            drafts = [pool.submit(check_draft) for _ in range(2)]
            time.sleep(1.5)  # both drafts are in
            status, took = hook_call()
            answered = time.monotonic()
            checked = sorted((f.result() for f in drafts), key=lambda pair: pair[0].status_code)
        assert status == 200 and took < 2.0, took
        (ran, ran_until), (refused, _) = checked
        assert ran.status_code == 200 and ran_until > answered  # the draft was still being checked
        assert ran.json()["errors"][0]["message"] == (f"checking the draft took longer than {TIME_LIMIT_SECONDS:g} "
                                                      "s, so it was stopped")
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
        assert refused.json()["issue"][0]["code"] == "transient"
