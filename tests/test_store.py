"""The store on both backends (SQLite and PostgreSQL): migrations, feedback, the jti replay cache shared by
workers, the outcome summary, and durability: whatever the server answered with 200 is in the store after a worker
is killed with SIGKILL under load."""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import insert, inspect

import schemas
from store import AuditRecord, Store, StoreError, alembic_config
from store.tables import audit, audit_card, drafts, feedback, metadata, proposal, proposal_review, seen_jti
from tests.conftest import (
    REPO,
    RULES_DIR,
    LiveServer,
    _wait_ready,
    cdsrules_command,
    free_port,
    hetrombopag_order,
    order_sign_request,
    patient_record,
    prefetch_for,
)
from tests.fhir_server import FhirServer

pytestmark = pytest.mark.timeout(90)

TABLES = {"feedback", "audit", "audit_card", "jti", "drafts", "proposal", "proposal_review", "alembic_version"}


def _head() -> str:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


# --- schema -----------------------------------------------------------------------------------


def test_migrations_make_the_schema_the_code_expects_and_upgrading_again_changes_nothing(store_url):
    store = Store(store_url)
    assert store.schema_revision() is None
    store.migrate()
    assert store.schema_revision() == _head()
    with store.engine.connect() as connection:
        assert set(inspect(connection).get_table_names()) == TABLES
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == [], "the migrations and store.tables disagree"
    store.add_feedback("svc", {"card": "c1", "outcome": "accepted", "outcomeTimestamp": "2026-06-02T10:00:00Z"})
    store.migrate()
    store.create_tables()
    assert store.schema_revision() == _head()
    assert len(store.feedback_rows()) == 1, "upgrading again keeps the rows"


def _schema_at(name: str, *path: str) -> dict:
    node = schemas.load(f"{name}.schema.json")
    for key in path:
        node = node[key]
    return node


_WORKBENCH_USER = ("properties", "workbench", "properties", "users", "items", "properties")
_FEEDBACK_ITEM = ("$defs", "feedbackRequest", "properties", "feedback", "items", "properties")
# Every string that reaches a column, from where it is checked: a request, a ruleset or the auth config.
_LIMITED = [
    (_schema_at("cds-request", "properties", "hookInstance"), audit.c.hook_instance, 0),
    (_schema_at("cds-request", "$defs", "id"), audit.c.patient_id, 0),
    (_schema_at("cds-request", *_FEEDBACK_ITEM, "card"), feedback.c.card, 0),
    (_schema_at("cds-request", *_FEEDBACK_ITEM, "card"), audit_card.c.card_uuid, 0),  # looked up by it
    (_schema_at("cds-request", "$defs", "instant"), feedback.c.outcome_timestamp, 0),  # stored in UTC: shorter
    (_schema_at("ruleset", "properties", "id"), audit.c.ruleset, 0),
    (_schema_at("ruleset", "properties", "id"), audit.c.service, len("-order-select")),  # <ruleset>-<hook>
    (_schema_at("ruleset", "properties", "version"), audit.c.version, 0),
    (_schema_at("ruleset", "$defs", "decision", "properties", "topic"), audit_card.c.topic, 0),
    (_schema_at("ruleset", "$defs", "rule", "properties", "id"), audit_card.c.rule_id, 0),
    (_schema_at("auth-config", "properties", "issuers", "items", "properties", "iss"), seen_jti.c.issuer, 0),
    (_schema_at("ruleset", "properties", "id"), drafts.c.ruleset, 0),
    (_schema_at("ruleset", "properties", "version"), drafts.c.version, 0),
    (_schema_at("auth-config", *_WORKBENCH_USER, "name"), proposal.c.proposed_by, 0),
    (_schema_at("auth-config", *_WORKBENCH_USER, "name"), proposal_review.c.reviewer, 0),
    (_schema_at("auth-config", "properties", "workbench", "properties", "trusted_header_roles", "propertyNames"),
     proposal_review.c.reviewer, 0),  # a header's name has roles only when the config lists it
    (_schema_at("ruleset", "properties", "version"), proposal.c.version, 0),
]


@pytest.mark.parametrize("schema,column,added", _LIMITED, ids=[str(column) for _, column, _ in _LIMITED])
def test_every_string_that_reaches_a_column_is_limited_to_fit_it(schema, column, added):
    """A value too long for its column is refused where it comes in (400 for a request), never lost in the store
    (PostgreSQL refuses a string longer than its VARCHAR; SQLite keeps it)."""
    assert "maxLength" in schema, f"nothing limits what goes into {column}"
    assert schema["maxLength"] + added <= column.type.length


def test_workers_starting_together_migrate_once(store_url):
    """Two processes migrating the same new store at the same moment: one migrates, the other finds it done."""
    script = "import sys; from store import Store; Store(sys.argv[1]).migrate()"
    processes = [subprocess.Popen([sys.executable, "-c", script, store_url], cwd=REPO, stderr=subprocess.PIPE)
                 for _ in range(2)]
    failures = [p.stderr.read().decode() for p in processes if p.wait(30) != 0]
    assert failures == []
    assert Store(store_url).schema_revision() == _head()


def test_a_store_made_before_migrations_is_refused_with_a_reason(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = Store(url)
    with store.engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE feedback (id INTEGER PRIMARY KEY)")
    with pytest.raises(StoreError, match="before schema migrations"):
        store.migrate()


def test_sqlite_runs_in_wal_mode_with_normal_sync(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.migrate()
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL: see store/database.py


_HOLD_THE_WRITE_TURN = """
import sys, uuid
from sqlalchemy import insert
from store import Store
from store.tables import audit
store = Store(sys.argv[1])
with store._turn():
    print("holding", flush=True)
    sys.stdin.readline()
    with store.engine.begin() as connection:
        connection.execute(insert(audit), dict(decision_id=str(uuid.uuid4()), hook_instance="held", service="s",
                           hook="order-sign", ruleset="r", version="1", fired_rules="[]", decisions="[]",
                           cards="[]", latency_ms=1.0, created_at="2026-01-01T00:00:00+00:00"))
"""


def test_sqlite_writers_in_two_processes_take_turns_instead_of_failing(tmp_path):
    """A worker has its turn to write; another's audit write waits in the queue (not in SQLite's busy handler,
    which sleeps in growing steps), then lands right after: neither is lost."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(url)
    store.migrate()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_THE_WRITE_TURN, url], cwd=REPO, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "holding"
        written: list[bool] = []
        writer = threading.Thread(target=lambda: written.append(store.add_audit(_record([], hook_instance="queued"))))
        writer.start()
        writer.join(0.5)
        assert writer.is_alive() and not written, "the second writer waits while the first holds the turn"
        holder.stdin.write("done\n")
        holder.stdin.flush()
        writer.join(10)
        assert written == [True]
    finally:
        holder.kill()
        holder.wait()
    assert sorted(r["hook_instance"] for r in store.audit_rows()) == ["held", "queued"]


def test_where_writers_cannot_queue_on_the_lock_file_writes_still_land(tmp_path, caplog):
    """A file system that cannot lock (or a lock path that cannot be a file) leaves SQLite's own lock in charge."""
    (tmp_path / "store.db.write-lock").mkdir()  # os.open of the lock file fails as it would on such a mount
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.migrate()
    assert store.add_audit(_record([], hook_instance="first")) is True
    assert store.add_audit(_record([], hook_instance="second")) is True
    assert sorted(r["hook_instance"] for r in store.audit_rows()) == ["first", "second"]
    assert sum("cannot queue" in r.getMessage() for r in caplog.records) == 1, "said once, not per write"


# --- feedback and jti ---------------------------------------------------------------------------


def test_feedback_is_stored_once(store_url):
    store = Store(store_url)
    store.migrate()
    item = {"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-06-02T10:00:00Z",
            "overrideReason": {"reason": {"code": "other"}, "userComment": "seen"}}
    assert store.add_feedback("svc", item) is True
    assert store.add_feedback("svc", item) is False
    assert store.add_feedback("svc", {**item, "outcomeTimestamp": "2026-06-02T10:00:01Z"}) is True
    assert [r["card"] for r in store.feedback_rows("svc")] == ["c1", "c1"]


def test_one_instant_written_with_different_offsets_is_one_feedback(store_url):
    store = Store(store_url)
    store.migrate()
    item = {"card": "c1", "outcome": "accepted", "outcomeTimestamp": "2026-06-02T10:00:00Z"}
    assert store.add_feedback("svc", item) is True
    for same in ("2026-06-02T10:00:00+00:00", "2026-06-02T12:00:00+02:00", "2026-06-02T10:00:00.000-00:00"):
        assert store.add_feedback("svc", {**item, "outcomeTimestamp": same}) is False, same
    assert [r["outcome_timestamp"] for r in store.feedback_rows()] == ["2026-06-02T10:00:00.000000Z"]


def _insert_feedback_as_sent(store: Store, rows: list[tuple[str, str, str]]) -> None:
    """Feedback rows as the store kept them before timestamps were put in UTC: (card, outcome, timestamp)."""
    with store.engine.begin() as connection:
        connection.execute(insert(feedback), [
            {"service": "svc", "card": card, "outcome": outcome, "outcome_timestamp": timestamp,
             "received_at": "2026-06-02T10:00:00.000+00:00"} for card, outcome, timestamp in rows])


def test_upgrading_puts_feedback_timestamps_in_utc_and_keeps_one_row_per_instant(store_url):
    store = Store(store_url)
    store.migrate("0002")
    _insert_feedback_as_sent(store, [
        ("c1", "accepted", "2026-06-02T10:00:00Z"), ("c1", "accepted", "2026-06-02T12:00:00+02:00"),
        ("c1", "overridden", "2026-06-02T10:00:00+00:00"),
        ("c2", "accepted", "2026-06-02T10:00:00Z"), ("c2", "accepted", "2026-06-02T10:00:00.000000Z"),
        ("c3", "accepted", "yesterday")])
    with store.engine.connect() as connection:  # the table as it was at 0002
        first = connection.exec_driver_sql("SELECT min(id) FROM feedback").scalar()
    store.migrate()
    rows = store.feedback_rows()
    assert [(r["card"], r["outcome"], r["outcome_timestamp"]) for r in rows] == [
        ("c1", "accepted", "2026-06-02T10:00:00.000000Z"), ("c1", "overridden", "2026-06-02T10:00:00.000000Z"),
        ("c2", "accepted", "2026-06-02T10:00:00.000000Z"), ("c3", "accepted", "yesterday")]
    assert rows[0]["id"] == first, "of rows naming one instant, the first received is kept"


def test_the_latest_outcome_is_the_latest_instant_whatever_its_offset(store_url):
    store = Store(store_url)
    store.migrate()
    assert store.add_audit(_record([{"uuid": "card-a", "topic": "titration", "rule_id": "raise-dose"},
                                    {"uuid": "card-b", "topic": "titration", "rule_id": "raise-dose"}]))
    # card-a: overridden at 09:00 UTC, after it was accepted at 08:30 UTC (written +02:00, so later as text)
    for outcome, timestamp in (("accepted", "2026-06-02T10:30:00+02:00"), ("overridden", "2026-06-02T09:00:00Z")):
        store.add_feedback("svc", {"card": "card-a", "outcome": outcome, "outcomeTimestamp": timestamp})
    # card-b: accepted at 06:00 UTC in a row kept as sent, then overridden at 07:00 UTC
    _insert_feedback_as_sent(store, [("card-b", "accepted", "2026-06-02T11:00:00+05:00")])
    store.add_feedback("svc", {"card": "card-b", "outcome": "overridden", "outcomeTimestamp": "2026-06-02T07:00:00Z"})
    assert store.outcome_summary()["totals"] == {"shown": 2, "accepted": 0, "accepted_suggestion_unknown": 0,
                                                 "overridden": 2, "no_feedback": 0}


def test_a_jti_seen_by_one_worker_is_a_replay_for_another(store_url):
    first, second = Store(store_url), Store(store_url)  # as two gunicorn workers hold them
    first.migrate()
    future = int(time.time()) + 300
    assert first.remember_jti("iss", "j1", future) is True
    assert second.remember_jti("iss", "j1", future) is False
    assert second.remember_jti("other-iss", "j1", future) is True
    assert second.remember_jti("iss", "expired", int(time.time()) - 10) is True
    assert first.remember_jti("iss", "j2", future) is True  # ...and the expired one is cleaned up
    assert first.remember_jti("iss", "expired", future) is True


def test_a_jti_of_any_length_and_any_expiry_is_remembered(store_url):
    store = Store(store_url)
    store.migrate()
    future = int(time.time()) + 300
    long_jti = "j" * 2000
    assert store.remember_jti("iss", long_jti, future) is True
    assert store.remember_jti("iss", long_jti, future) is False
    assert store.remember_jti("iss", long_jti + "2", future) is True
    assert store.remember_jti("iss", "\ud800", future) is True  # a lone surrogate, as JSON can carry one
    for expires_at in (2**31, 10**30):  # after 2038; past any integer column
        assert store.remember_jti("iss", f"late-{expires_at}", expires_at) is True
        assert store.remember_jti("iss", f"late-{expires_at}", expires_at) is False


def test_upgrading_keeps_the_jtis_seen_before(store_url):
    store = Store(store_url)
    store.migrate("0001")
    future = int(time.time()) + 300
    with store.engine.begin() as connection:
        connection.exec_driver_sql(f"INSERT INTO jti (issuer, jti, expires_at) VALUES ('iss', 'seen-before', {future})"
                                   )
    store.migrate()
    assert store.remember_jti("iss", "seen-before", future) is False, "still a replay after the upgrade"
    assert store.remember_jti("iss", "new", future) is True


# --- drafts -----------------------------------------------------------------------------------


def test_saving_a_draft_again_keeps_the_earlier_text_as_history(store_url):
    first, second = Store(store_url), Store(store_url)  # two instances sharing the store
    first.migrate()
    saved = first.save_draft("hetrombopag", "1.2.0", "version: 1.2.0\n", "pharmacist.a")
    assert (saved.revision, saved.author, saved.text_sha256) == (
        1, "pharmacist.a", hashlib.sha256(b"version: 1.2.0\n").hexdigest())
    again = second.save_draft("hetrombopag", "1.2.0", "version: 1.2.0  # reviewed\n", None)
    assert again.revision == 2 and again.author is None
    assert first.draft("hetrombopag", "1.2.0").text == "version: 1.2.0  # reviewed\n"
    assert [d.text for d in first.draft_history("hetrombopag", "1.2.0")] == [
        "version: 1.2.0\n", "version: 1.2.0  # reviewed\n"]
    second.save_draft("eltrombopag-itp", "1.0.1", "version: 1.0.1\n", None)
    assert [(d.ruleset, d.version, d.revision) for d in first.drafts()] == [
        ("eltrombopag-itp", "1.0.1", 1), ("hetrombopag", "1.2.0", 2)]
    assert first.draft("hetrombopag", "9.9.9") is None
    assert saved.saved_at <= again.saved_at


def test_drafts_saved_at_once_by_many_writers_each_get_a_revision(store_url):
    store = Store(store_url)
    store.migrate()
    stores = [Store(store_url) for _ in range(4)]
    threads = [threading.Thread(target=s.save_draft, args=("hetrombopag", "2.0.0", f"text {i}", None))
               for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(d.revision for d in store.draft_history("hetrombopag", "2.0.0")) == [1, 2, 3, 4]


def test_the_drafts_migration_goes_down_and_up_again(store_url):
    store = Store(store_url)
    store.migrate()
    store.save_draft("hetrombopag", "1.2.0", "text", None)
    from alembic import command

    command.downgrade(alembic_config(store_url), "0004")
    with store.engine.connect() as connection:
        assert "drafts" not in inspect(connection).get_table_names()
    store.migrate()
    assert store.schema_revision() == _head() and store.drafts() == []


# --- outcomes ---------------------------------------------------------------------------------


def _record(cards: list[dict], **fields) -> AuditRecord:
    values = dict(decision_id=str(uuid.uuid4()), hook_instance=str(uuid.uuid4()), service="hetrombopag-order-sign",
                  hook="order-sign", patient_id="p1", ruleset="hetrombopag", version="1.0.0",
                  fired_rules=[c["rule_id"] for c in cards], cards=cards, latency_ms=1.0)
    return AuditRecord(**{**values, **fields})


def test_the_outcome_summary_joins_feedback_on_the_card(store_url):
    store = Store(store_url)
    store.migrate()
    cards = [{"uuid": f"card-{n}", "topic": topic, "rule_id": rule} for n, (topic, rule) in
             enumerate([("titration", "raise-dose"), ("titration", "raise-dose"), ("titration", "keep-dose"),
                        ("monitoring", "liver-tests")])]
    assert store.add_audit(_record(cards[:2]))
    assert store.add_audit(_record(cards[2:]))
    reason = {"reason": {"code": "patient-declined", "system": "urn:x", "display": "Patient declined"},
              "userComment": "family prefers to wait"}
    store.add_feedback("svc", {"card": "card-0", "outcome": "accepted", "outcomeTimestamp": "2026-06-02T10:00:00Z",
                               "acceptedSuggestions": [{"id": "s-1"}]})
    store.add_feedback("svc", {"card": "card-1", "outcome": "overridden", "outcomeTimestamp": "2026-06-02T10:00:00Z",
                               "overrideReason": reason})
    store.add_feedback("svc", {"card": "card-3", "outcome": "accepted", "outcomeTimestamp": "2026-06-02T10:00:00Z"})
    store.add_feedback("svc", {"card": "card-3", "outcome": "overridden", "outcomeTimestamp": "2026-06-02T11:00:00Z"})
    store.add_feedback("svc", {"card": "unknown", "outcome": "accepted", "outcomeTimestamp": "2026-06-02T10:00:00Z"})

    summary = store.outcome_summary()
    known = {"accepted_suggestion_unknown": 0}
    assert summary["totals"] == {"shown": 4, "accepted": 1, **known, "overridden": 2, "no_feedback": 1}
    assert summary["by_topic"] == [
        {"topic": "titration", "shown": 3, "accepted": 1, **known, "overridden": 1, "no_feedback": 1},
        {"topic": "monitoring", "shown": 1, "accepted": 0, **known, "overridden": 1, "no_feedback": 0}]
    assert summary["by_rule"][0] == {"rule_id": "raise-dose", "topic": "titration", "shown": 2, "accepted": 1,
                                     **known, "overridden": 1, "no_feedback": 0}
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert {(d["day"], d["topic"], d["shown"]) for d in summary["by_day"]} == {(today, "titration", 3),
                                                                              (today, "monitoring", 1)}
    assert summary["override_reasons"] == [
        {"topic": "monitoring", "rule_id": "liver-tests", "code": None, "system": None, "display": None, "count": 1},
        {"topic": "titration", "rule_id": "raise-dose", "code": "patient-declined", "system": "urn:x",
         "display": "Patient declined", "count": 1}]
    assert summary["comments"] == [{"card_uuid": "card-1", "topic": "titration", "rule_id": "raise-dose",
                                    "day": today, "reason": "Patient declined", "comment": "family prefers to wait"}]
    tomorrow = dt.date.today() + dt.timedelta(days=2)
    assert store.outcome_summary(since=tomorrow)["totals"]["shown"] == 0
    assert store.outcome_summary(until=today, ruleset="hetrombopag")["totals"]["shown"] == 4
    assert store.outcome_summary(ruleset="other")["by_topic"] == []


# --- durability under SIGKILL -------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _wait_for_workers(pid: int, count: int, gone: int | None = None, timeout: float = 20) -> list[int]:
    """The master's worker pids once there are `count` of them (and `gone` is not one of them any more)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = _children(pid)
        if len(workers) >= count and gone not in workers:
            return workers
        time.sleep(0.1)
    raise AssertionError(f"the server has workers {_children(pid)}, not {count} without {gone}")


class Load:
    """A few clients sending hook calls and feedback on the cards those calls issued; remembers what was
    acknowledged with 200."""

    def __init__(self, base_url: str, bodies: dict[str, dict], total: int):
        self.base_url, self.bodies, self.total = base_url, bodies, total
        self.sent = 0
        self.acknowledged_calls: set[str] = set()
        self.acknowledged_cards: set[str] = set()
        self.failures = 0
        self._issued: list[str] = []  # cards issued in acknowledged calls, not yet sent feedback
        self._lock = threading.Lock()

    def _next(self) -> tuple[int, str | None] | None:
        """The next request's number, and the card to send feedback on (None: a hook call)."""
        with self._lock:
            if self.sent >= self.total:
                return None
            self.sent += 1
            card = self._issued.pop() if self.sent % 2 == 0 and self._issued else None
            return self.sent, card

    def client(self) -> None:
        session = requests.Session()
        while (turn := self._next()) is not None:
            _, card = turn
            if card is None:
                body = {**self.bodies["order-sign"], "hookInstance": str(uuid.uuid4())}
                path, key = "/cds-services/hetrombopag-order-sign", body["hookInstance"]
            else:
                path, key = "/cds-services/hetrombopag-order-sign/feedback", card
                body = {"feedback": [{"card": card, "outcome": "accepted",
                                      "outcomeTimestamp": "2026-06-02T10:00:00Z"}]}
            try:
                response = session.post(self.base_url + path, json=body, timeout=10)
            except requests.RequestException:
                response = None
                session = requests.Session()
            with self._lock:
                if response is None or response.status_code != 200:
                    self.failures += 1
                elif card is None:
                    self.acknowledged_calls.add(key)
                    self._issued += [c["uuid"] for c in response.json()["cards"]]
                else:
                    self.acknowledged_cards.add(key)
        session.close()


@pytest.fixture(scope="module")
def patient_fhir():
    server = FhirServer().start()
    server.reset(patient_record(dt.date.today(), platelets=40))
    yield server
    server.stop()


def test_nothing_acknowledged_is_lost_when_a_worker_is_killed(store_url, tmp_path, patient_fhir):
    port = free_port()
    log_path = tmp_path / "server.log"
    command = cdsrules_command() + ["serve", "--no-auth", "--host", "127.0.0.1", "--port", str(port), "--db",
                                    store_url, "--workers", "2", "--rules", str(RULES_DIR)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path, Path())
    try:
        _wait_ready(server)
        workers = _wait_for_workers(process.pid, 2)
        services = {s["id"]: s for s in requests.get(server.base_url + "/cds-services", timeout=5).json()["services"]}
        today = dt.date.today()
        draft = hetrombopag_order("draft-1", "p1", 5, "draft", today)
        order_sign = order_sign_request("p1", [draft],
                                        prefetch=prefetch_for(services["hetrombopag-order-sign"]["prefetch"],
                                                              patient_fhir, "p1"))
        load = Load(server.base_url, {"order-sign": order_sign}, total=160)
        clients = [threading.Thread(target=load.client) for _ in range(4)]
        for client in clients:
            client.start()
        while load.sent < load.total // 3:
            time.sleep(0.005)
        os.kill(workers[0], signal.SIGKILL)
        for client in clients:
            client.join(60)
        assert not any(c.is_alive() for c in clients)
        # the master replaces the killed worker, and the service keeps answering
        _wait_for_workers(process.pid, 2, gone=workers[0])
        assert requests.get(server.base_url + "/readyz", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGQUIT)  # quick shutdown: what was acknowledged is stored already
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()

    assert len(load.acknowledged_calls) + len(load.acknowledged_cards) + load.failures == load.total
    assert len(load.acknowledged_calls) > 40 and len(load.acknowledged_cards) > 40, server.log()[-3000:]
    assert load.failures <= 8, "only the calls in flight on the killed worker may fail"
    store = Store(store_url)
    audited = {r["hook_instance"] for r in store.audit_rows()}
    fed_back = {r["card"] for r in store.feedback_rows()}
    lost_calls = load.acknowledged_calls - audited
    lost_feedback = load.acknowledged_cards - fed_back
    assert not lost_calls and not lost_feedback, f"lost {len(lost_calls)} audit, {len(lost_feedback)} feedback"
    store.engine.dispose()
