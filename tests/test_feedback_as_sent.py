"""Feedback that loses nothing, through the real server: each item kept as it was sent, an incomplete item (misspelt
or singular keys, as a real client library sends them) never absorbs the complete resend, an acceptance that does
not say which suggestion is counted as such, and keys CDS Hooks does not define are kept and counted."""
from __future__ import annotations

import copy
import datetime as dt
import json

import pytest
import requests

from store import Store
from tests.conftest import hetrombopag_order, order_sign_request, patient_record, prefetch_for
from tests.fhir_server import FhirData

pytestmark = pytest.mark.timeout(120)
TODAY = dt.date.today()
WHEN = f"{TODAY}T10:00:00Z"


@pytest.fixture(scope="module")
def server(plain_server):
    live = copy.copy(plain_server)  # the shared server, with this module's own attributes
    live.prefetch = next(s for s in requests.get(f"{live.base_url}/cds-services", timeout=10).json()["services"]
                         if s["hook"] == "order-sign")["prefetch"]
    return live


def shown_card(server) -> dict:
    """A card with a suggestion that the order-sign service issued just now."""
    draft = hetrombopag_order("draft-1", "p1", 5, "draft", TODAY)
    record = FhirData(patient_record(TODAY, platelets=40))
    body = order_sign_request("p1", [draft], prefetch=prefetch_for(server.prefetch, record, "p1"))
    cards = requests.post(f"{server.base_url}/cds-services/hetrombopag-order-sign", json=body, timeout=20).json()
    return next(c for c in cards["cards"] if c.get("suggestions"))


def send(server, *items: dict) -> None:
    response = requests.post(f"{server.base_url}/cds-services/hetrombopag-order-sign/feedback",
                             json={"feedback": list(items)}, timeout=20)
    assert response.status_code == 200, response.text


def rows(server, card: dict) -> list[dict]:
    return [r for r in Store(f"sqlite:///{server.db_path}").feedback_rows() if r["card"] == card["uuid"]]


def totals(server) -> dict:
    return Store(f"sqlite:///{server.db_path}").outcome_summary()


def test_a_misspelt_item_never_absorbs_the_correct_resend(server):
    """Before, the resend was taken for a duplicate of the incomplete row, and the accepted suggestion was lost."""
    card = shown_card(server)
    suggestion = card["suggestions"][0]["uuid"]
    misspelt = {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": WHEN,
                "acceptedSuggestion": {"id": suggestion}}
    send(server, misspelt)
    send(server, {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": WHEN,
                  "acceptedSuggestions": [{"id": suggestion}]})
    send(server, misspelt)  # the same item again is still one row
    stored = rows(server, card)
    assert [json.loads(r["accepted_suggestions"] or "null") for r in stored] == [None, [suggestion]]
    assert json.loads(stored[0]["item"]) == misspelt, "the item is kept exactly as it was sent"
    assert json.loads(stored[0]["unknown_keys"]) == ["acceptedSuggestion"]


def test_an_acceptance_that_does_not_say_which_suggestion_is_counted_as_such(server):
    before = totals(server)["totals"]
    card = shown_card(server)
    send(server, {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": WHEN})
    after = totals(server)["totals"]
    assert after["accepted"] == before["accepted"] + 1
    assert after["accepted_suggestion_unknown"] == before["accepted_suggestion_unknown"] + 1


def test_keys_cds_hooks_does_not_define_are_kept_and_counted(server):
    card = shown_card(server)
    before = totals(server)["unknown_keys"].get("overriddeReason", 0)
    item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": WHEN,
            "overriddeReason": {"userComment": "family prefers to wait"}}
    send(server, item)
    assert totals(server)["unknown_keys"]["overriddeReason"] == before + 1
    assert json.loads(rows(server, card)[0]["item"])["overriddeReason"]["userComment"] == "family prefers to wait"


def test_upgrading_keeps_the_feedback_stored_before(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    store.migrate("0003")
    with store.engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO feedback (service, card, outcome, outcome_timestamp, received_at) "
            "VALUES ('svc', 'c1', 'accepted', '2026-06-02T10:00:00.000000Z', '2026-06-02T10:00:01Z')")
    store.migrate()
    (row,) = store.feedback_rows()
    assert row["card"] == "c1" and len(row["item_sha256"]) == 64
    item = {"card": "c1", "outcome": "accepted", "outcomeTimestamp": "2026-06-02T10:00:00Z",
            "acceptedSuggestions": [{"id": "s1"}]}
    assert store.add_feedback("svc", item) is True, "the complete item is not a duplicate of the old row"
    assert store.add_feedback("svc", item) is False
