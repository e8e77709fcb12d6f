"""The decision audit on both store backends: the record a real hook call leaves, `cdsrules audit export` (JSON
lines and CSV) and `cdsrules audit replay` (identical, different, and refused for a changed version file)."""
from __future__ import annotations

import csv
import io
import json
import shutil
import uuid

import pytest
import yaml
from sqlalchemy import select, update

from cdsrules.audit import EXIT_DIFFERENT, EXIT_IDENTICAL, EXIT_REFUSED
from engine.versions import file_sha256
from store.tables import audit, audit_card
from tests.commands import audit_cli
from tests.conftest import (
    RULES_DIR,
    TODAY,
    build_app,
    hetrombopag_order,
    order_sign_request,
    patient_record,
    prefetch_for,
)

pytestmark = pytest.mark.timeout(60)

RELEASED_SHA256 = yaml.safe_load((RULES_DIR / "hetrombopag" / "releases.yaml").read_text())["releases"][0]["sha256"]





@pytest.fixture(scope="module")
def audit_app(module_store_url, tmp_path_factory, fhir_server):
    """An app on the store (one per backend, shared by this module's tests)."""
    app = build_app(tmp_path_factory.mktemp("audit"), fhir_server, DB_URL=module_store_url)
    yield app
    app.extensions["cdsrules"].store.engine.dispose()


@pytest.fixture
def store_url(module_store_url):
    return module_store_url


@pytest.fixture
def audited(audit_app, fhir_server):
    """One order-sign call answered with cards, and that call's audit record."""
    client = audit_app.test_client()
    fhir_server.reset(patient_record(TODAY, platelets=40))
    templates = {s["id"]: s for s in client.get("/cds-services").get_json()["services"]}
    body = order_sign_request("p1", [hetrombopag_order("draft-1", "p1", 5, "draft", TODAY)],
                              prefetch=prefetch_for(templates["hetrombopag-order-sign"]["prefetch"], fhir_server, "p1"))
    response = client.post("/cds-services/hetrombopag-order-sign", json=body)
    assert response.status_code == 200
    cards = response.get_json()["cards"]
    assert cards, "a platelet count of 40 calls for advice"
    store = audit_app.extensions["cdsrules"].store
    (record,) = [r for r in store.audit_records() if r["hook_instance"] == body["hookInstance"]]
    return store, record, cards


def test_a_hook_call_leaves_a_complete_audit_record(audited):
    store, record, cards = audited
    assert uuid.UUID(record["decision_id"])
    assert record["service"] == "hetrombopag-order-sign" and record["hook"] == record["evaluated_hook"] == "order-sign"
    assert record["patient_id"] == "p1" and record["evaluation_date"] == TODAY.isoformat()
    assert (record["ruleset"], record["version"]) == ("hetrombopag", "1.0.0")
    assert record["manifest_sha256"] == RELEASED_SHA256
    assert record["facts"]["platelets_10e9_l"] == 40 and record["facts"]["today"] == TODAY.isoformat()
    assert record["missing"]["platelet_transfusion_date"] == "no value"
    assert record["fired_rules"] and record["latency_ms"] > 0 and record["created_at"]
    decisions = record["decisions"]
    assert decisions and set(decisions[0]) == {"rule_id", "topic", "indicator", "summary", "action", "daily_dose"}
    assert set(record["fired_rules"]) >= {d["rule_id"] for d in decisions}
    assert record["cards"] == [{"uuid": c["uuid"], "topic": c["source"]["topic"]["code"]} for c in cards]
    with store.engine.connect() as connection:
        shown = connection.execute(select(audit_card).where(audit_card.c.decision_id == record["decision_id"])
                                   ).mappings().all()
    first_rule = {}
    for d in decisions:
        first_rule.setdefault(d["topic"], d["rule_id"])
    assert sorted((r["card_uuid"], r["topic"], r["rule_id"], r["decision_id"]) for r in shown) == sorted(
        (c["uuid"], c["source"]["topic"]["code"], first_rule[c["source"]["topic"]["code"]], record["decision_id"])
        for c in cards)
    # feedback joins on the card uuid
    store.add_feedback("hetrombopag-order-sign", {"card": cards[0]["uuid"], "outcome": "accepted",
                                                  "outcomeTimestamp": "2026-06-02T10:00:00Z"})
    topic = cards[0]["source"]["topic"]["code"]
    before = {t["topic"]: t for t in store.outcome_summary()["by_topic"]}[topic]
    store.add_feedback("hetrombopag-order-sign", {"card": cards[0]["uuid"], "outcome": "overridden",
                                                  "outcomeTimestamp": "2026-06-02T10:01:00Z"})
    after = {t["topic"]: t for t in store.outcome_summary()["by_topic"]}[topic]
    assert (after["shown"], after["accepted"], after["overridden"]) == (before["shown"], before["accepted"] - 1,
                                                                        before["overridden"] + 1)
    assert store.audit_record(cards[0]["uuid"])["decision_id"] == record["decision_id"]


def test_feedback_is_taken_only_for_cards_the_service_issued(audited, audit_app):
    store, _, cards = audited
    client = audit_app.test_client()
    card, never_issued = cards[0]["uuid"], str(uuid.uuid4())

    def send(service_id: str, *card_uuids: str):
        items = [{"card": c, "outcome": "accepted", "outcomeTimestamp": "2026-06-02T10:00:00Z"} for c in card_uuids]
        return client.post(f"/cds-services/{service_id}/feedback", json={"feedback": items})

    for service_id, sent, refused in (("hetrombopag-patient-view", [card], card),  # another service's card
                                      ("hetrombopag-order-sign", [card, never_issued], never_issued)):
        answer = send(service_id, *sent)
        assert answer.status_code == 404
        assert answer.get_json()["resourceType"] == "OperationOutcome"
        assert refused in answer.get_json()["issue"][0]["diagnostics"]
    assert [r for r in store.feedback_rows() if r["card"] in (card, never_issued)] == [], "none of it is kept"
    assert send("hetrombopag-order-sign", card).status_code == 200
    assert [r["service"] for r in store.feedback_rows() if r["card"] == card] == ["hetrombopag-order-sign"]


@pytest.mark.parametrize("timestamp", ["yesterday", "2026-06-02T10:00:00", "2026-06-02", "2026-02-30T10:00:00Z"])
def test_an_outcome_timestamp_that_is_not_a_fhir_instant_is_400(audited, audit_app, timestamp):
    store, _, cards = audited
    feedback = {"feedback": [{"card": cards[0]["uuid"], "outcome": "accepted", "outcomeTimestamp": timestamp}]}
    answer = audit_app.test_client().post("/cds-services/hetrombopag-order-sign/feedback", json=feedback)
    assert answer.status_code == 400
    assert "feedback/0/outcomeTimestamp" in answer.get_json()["issue"][0]["diagnostics"]
    assert [r for r in store.feedback_rows() if r["card"] == cards[0]["uuid"]] == []


def test_a_hook_instance_too_long_for_its_column_is_400_and_one_that_fits_is_recorded(audit_app, fhir_server):
    """PostgreSQL refuses a string longer than its column: the request schema refuses it first, with a reason."""
    client = audit_app.test_client()
    fhir_server.reset(patient_record(TODAY, platelets=40))
    body = {"hook": "patient-view", "fhirServer": fhir_server.url, "context": {"patientId": "p1"}}
    too_long = client.post("/cds-services/hetrombopag-patient-view", json={**body, "hookInstance": "h" * 201})
    assert too_long.status_code == 400 and "hookInstance" in too_long.get_json()["issue"][0]["diagnostics"]
    fits = "h" * 199 + uuid.uuid4().hex[:1]
    answer = client.post("/cds-services/hetrombopag-patient-view", json={**body, "hookInstance": fits})
    assert answer.status_code == 200 and answer.get_json()["cards"]
    store = audit_app.extensions["cdsrules"].store
    assert [r["hook_instance"] for r in store.audit_rows()].count(fits) == 1


def test_export_as_json_lines_and_csv(audited, store_url, capsys):
    _, record, _ = audited
    assert audit_cli("audit", "export", "--db", store_url) == 0
    (exported,) = [r for r in map(json.loads, capsys.readouterr().out.splitlines())
                   if r["decision_id"] == record["decision_id"]]
    assert exported["decision_id"] == record["decision_id"] and exported["facts"] == record["facts"]
    assert exported["decisions"] == record["decisions"] and exported["manifest_sha256"] == RELEASED_SHA256

    assert audit_cli("audit", "export", "--db", store_url, "--format", "csv", "--since", "2000-01-01") == 0
    (row,) = [r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))
              if r["decision_id"] == record["decision_id"]]
    assert row["decision_id"] == record["decision_id"] and json.loads(row["decisions"]) == record["decisions"]
    assert json.loads(row["facts"]) == record["facts"]

    assert audit_cli("audit", "export", "--db", store_url, "--since", "2999-01-01") == 0
    assert capsys.readouterr().out == ""


def test_replay_reproduces_the_recorded_decisions(audited, store_url, capsys):
    _, record, _ = audited
    assert audit_cli("audit", "replay", record["decision_id"], "--db", store_url, "--rules", str(RULES_DIR)) \
        == EXIT_IDENTICAL
    out = capsys.readouterr().out
    assert out.strip().endswith("identical") and "hetrombopag@1.0.0" in out and record["decision_id"] in out


def test_replay_reports_decisions_that_differ(audited, store_url, capsys):
    store, record, _ = audited
    changed = [{**record["decisions"][0], "indicator": "info"}] + record["decisions"][1:]
    with store.engine.begin() as connection:
        connection.execute(update(audit).where(audit.c.decision_id == record["decision_id"])
                           .values(decisions=json.dumps(changed)))
    assert audit_cli("audit", "replay", record["decision_id"], "--db", store_url, "--rules", str(RULES_DIR)) \
        == EXIT_DIFFERENT
    assert "DIFFERENT" in capsys.readouterr().out


def test_replay_refuses_a_version_file_that_changed(audited, store_url, tmp_path, capsys):
    _, record, _ = audited
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    version_file = rules / "hetrombopag" / "1.0.0.yaml"
    version_file.write_text(version_file.read_text() + "# an innocent comment\n")
    assert audit_cli("audit", "replay", record["decision_id"], "--db", store_url, "--rules", str(rules)) \
        == EXIT_REFUSED
    error = capsys.readouterr().err
    assert str(version_file) in error and RELEASED_SHA256 in error and file_sha256(version_file) in error


def test_replay_and_export_refuse_what_is_not_there(tmp_path, capsys):
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    with pytest.raises(OSError, match="no store"):
        audit_cli("audit", "export", "--db", missing)
    assert not (tmp_path / "none.db").exists()
