"""Reload without downtime: a release picked up by the running server under load; a broken set refused; a worker
started after a refused reload serves the last good set; and no rules problem stops the server."""
import datetime as dt
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from engine import versions
from tests.conftest import REPO, cdsrules_command, free_port, patient_record, running_server, write_auth_config
from tests.helpers import edited, without_uuids
from webhook import check_rules
from webhook.known_good import KnownGood, RulesRefused

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def rules_copy(tmp_path):
    target = tmp_path / "rules"
    shutil.copytree(REPO / "rules", target, ignore=shutil.ignore_patterns(".reload"))
    return target


def wait_for(condition, base, timeout=20):
    """Every worker must agree: several answers in a row satisfy the condition."""
    deadline, streak = time.monotonic() + timeout, 0
    while time.monotonic() < deadline and streak < 8:
        streak = streak + 1 if condition(requests.get(base + "/readyz", timeout=5).json()) else 0
        if streak < 8:
            time.sleep(0.05)  # each answer on a new connection: whichever worker is idle takes it
    return streak >= 8


def until(condition, timeout: float = 20) -> bool:
    """Polls `condition` (no server involved) until it holds or the time is up."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_readyz_names_the_files_of_a_refused_set_without_server_paths(rules_copy, make_app):
    """/readyz is public even with auth on: a refused reload names its files within the rules folder."""
    client = make_app(RULES_DIR=str(rules_copy)).test_client()
    broken = rules_copy / "hetrombopag" / "1.2.0.yaml"
    broken.write_text((rules_copy / "hetrombopag" / "1.1.0.yaml").read_text()
                      .replace("version: 1.1.0", "version: 1.2.0").replace("{param: max_daily_dose_mg}",
                                                                           "{param: max_dose}", 1))
    (rules_copy / versions.RELOAD_MARKER).touch()
    deadline = time.monotonic() + 5  # the marker is looked at once a second
    while "reloadError" not in (body := client.get("/readyz").get_json()) and time.monotonic() < deadline:
        time.sleep(0.2)
    error = body["reloadError"]
    assert "rules/hetrombopag/1.2.0.yaml" in error and "max_dose" in error
    assert str(rules_copy.parent) not in error and "/tmp" not in error


def test_reload_under_load_activates_a_release_and_refuses_a_broken_set(rules_copy, tmp_path, fhir):
    today = dt.date.today()
    fhir.reset(patient_record(today, platelets=20))
    with running_server(tmp_path, "--rules", str(rules_copy), "--no-auth", "--workers", "2") as server:
        run_under_load(server.base_url, rules_copy, tmp_path, fhir, today)


def run_under_load(base, rules_copy, tmp_path, fhir, today):
    statuses, versions_seen, stop = [], set(), threading.Event()

    def load():
        with requests.Session() as session:
            while not stop.is_set():
                body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": fhir.url,
                        "context": {"userId": "Practitioner/dr1", "patientId": "p1"}}
                answer = session.post(base + "/cds-services/hetrombopag-patient-view", json=body, timeout=30)
                statuses.append(answer.status_code)
                for card in answer.json().get("cards", []):
                    versions_seen.add(card["extension"]["cdsrules.provenance"]["version"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        assert until(lambda: len(statuses) >= 8)  # under load before the release
        versions.release(rules_copy / "hetrombopag" / "1.1.0.yaml", today, "Protocol committee")
        assert subprocess.run(cdsrules_command() + ["reload", "--rules", str(rules_copy)]).returncode == 0
        assert wait_for(lambda r: "hetrombopag@1.1.0" in r["rulesets"] and "reloadError" not in r, base)

        broken = rules_copy / "hetrombopag" / "1.2.0.yaml"
        broken.write_text((rules_copy / "hetrombopag" / "1.1.0.yaml").read_text()
                          .replace("version: 1.1.0", "version: 1.2.0").replace("{param: max_daily_dose_mg}",
                                                                               "{param: max_dose}", 1))
        assert subprocess.run(cdsrules_command() + ["reload", "--rules", str(rules_copy)],
                              capture_output=True).returncode == 1
        assert wait_for(lambda r: "max_dose" in r.get("reloadError", "") and "hetrombopag@1.1.0" in r["rulesets"],
                        base)
        answered = len(statuses)
        assert until(lambda: len(statuses) >= answered + 8)  # and still under load after the refusal
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert len(statuses) > 20 and set(statuses) == {200}
    assert versions_seen == {"1.0.1", "1.1.0"}  # the release in effect today, then the new one
    assert "rules reload refused" in (tmp_path / "server.log").read_text()


# --- the known-good set ------------------------------------------------------------------------


def test_the_known_good_set_is_the_copy_that_loaded_not_the_folder_as_it_is_now(rules_copy, tmp_path):
    kept = KnownGood(tmp_path / "kept")
    released = rules_copy / "hetrombopag" / "1.0.0.yaml"
    original = released.read_text()
    kept.load_and_keep(rules_copy, 1.0, check_rules)
    released.write_text(original + "# edited after release\n")
    with pytest.raises(RulesRefused) as refused:
        kept.load_and_keep(rules_copy, 2.0, check_rules)
    assert f"{released}:0:0: at (document): released file was modified" in str(refused.value)  # as on disk
    (catalog, _), marker = kept.load_last(check_rules)
    assert marker == 1.0 and catalog.rulesets["hetrombopag"].rulesets["1.0.0"].source_text == original
    assert not list((tmp_path / "kept" / "staging").iterdir())  # the refused copy is gone


def test_a_kept_set_changed_afterwards_is_not_loaded(rules_copy, tmp_path):
    kept = KnownGood(tmp_path / "kept")
    kept.load_and_keep(rules_copy, 1.0, check_rules)
    (copy,) = (tmp_path / "kept" / "kept").iterdir()
    (copy / "hetrombopag" / "1.0.0.tests.yaml").write_text("tests: []\n")  # outside the release hash
    assert kept.load_last(check_rules) is None


def test_a_set_for_an_earlier_reload_never_replaces_a_later_one(rules_copy, tmp_path):
    kept = KnownGood(tmp_path / "kept")
    kept.load_and_keep(rules_copy, 2.0, check_rules)
    kept.load_and_keep(rules_copy, 1.0, check_rules)  # a slow load of an earlier reload, done last
    assert kept.load_last(check_rules)[1] == 2.0
    assert len(list((tmp_path / "kept" / "kept").iterdir())) == 1  # one copy kept, the others removed


def test_an_unreadable_record_is_as_if_nothing_were_kept(rules_copy, tmp_path):
    kept = KnownGood(tmp_path / "kept")
    kept.load_and_keep(rules_copy, 1.0, check_rules)
    (tmp_path / "kept" / "current.json").write_text("{not json")
    assert kept.load_last(check_rules) is None
    catalog, _ = kept.load_and_keep(rules_copy, 2.0, check_rules)  # loads, and is kept in its place
    assert "hetrombopag" in catalog.served_ids() and kept.load_last(check_rules)[1] == 2.0


# --- a worker started after the files changed serves the last good set -------------------------


def test_a_worker_started_after_a_refused_reload_serves_the_last_good_set(rules_copy, tmp_path, fhir):
    """A tampered release, refused by `cdsrules reload`; then every worker is killed with SIGKILL, one at a time.

    The replacements must serve the last set that loaded (1.1.0, reloaded after the start), not the tampered file,
    and the master must live on."""
    today = dt.date.today()
    fhir.reset(patient_record(today, platelets=20))
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    with running_server(tmp_path, "--rules", str(rules_copy), "--no-auth", "--workers", "2",
                        env={"TMPDIR": str(temporary)}) as server:
        released = rules_copy / "hetrombopag" / "1.1.0.yaml"
        versions.release(released, today, "Protocol committee")
        assert reload(rules_copy).returncode == 0
        assert wait_for(lambda r: "hetrombopag@1.1.0" in r["rulesets"] and "reloadError" not in r, server.base_url)
        expected = hook_cards(server.base_url, fhir)
        assert expected and {card_version(c) for c in expected} == {"1.1.0"}

        released.write_text(edited(released.read_text(), "value: 7.5\n", "value: 15\n"))  # a doubled dose cap
        refused = reload(rules_copy)
        assert refused.returncode == 1 and "released file was modified" in refused.stderr
        assert wait_for(lambda r: "released file was modified" in r.get("reloadError", ""), server.base_url)

        for worker in worker_pids(server):  # one at a time: its peer keeps serving meanwhile
            os.kill(worker, signal.SIGKILL)
            wait_until_replaced(server, worker)
        for _ in range(6):  # every worker now started after the tampering
            assert hook_cards(server.base_url, fhir) == expected
        readiness = requests.get(server.base_url + "/readyz", timeout=5).json()
        assert "hetrombopag@1.1.0" in readiness["rulesets"]
        assert "released file was modified" in readiness["reloadError"]
        assert server.process.poll() is None, server.log()
        assert len(list(temporary.glob("cdsrules-rules-*"))) == 1  # where the master keeps the last good set
    assert not list(temporary.glob("cdsrules-rules-*"))  # removed when the server stopped


def reload(rules: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cdsrules_command() + ["reload", "--rules", str(rules)], capture_output=True, text=True,
                          timeout=60)


def hook_cards(base: str, fhir) -> list[dict]:
    """The cards of one patient-view call on a new connection, without their random uuids."""
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": fhir.url,
            "context": {"userId": "Practitioner/dr1", "patientId": "p1"}}
    answer = requests.post(base + "/cds-services/hetrombopag-patient-view", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return without_uuids(answer.json()["cards"])


def card_version(card: dict) -> str:
    return card["extension"]["cdsrules.provenance"]["version"]


def worker_pids(server) -> list[int]:
    pid = server.process.pid
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def wait_until_replaced(server, dead: int, count: int = 2, timeout: float = 20) -> None:
    """The master has `count` workers again, `dead` not among them; fails at once if the master exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.process.poll() is None, f"the master exited:\n{server.log()}"
        workers = worker_pids(server)
        if len(workers) == count and dead not in workers:
            return
        time.sleep(0.1)
    raise AssertionError(f"workers {worker_pids(server)}, not {count} without {dead}")


# --- no rules problem stops the server ---------------------------------------------------------


def _tamper_release(rules: Path) -> None:
    released = rules / "hetrombopag" / "1.0.0.yaml"
    released.write_text(released.read_text() + "# edited after release\n")


def _break_yaml(rules: Path) -> None:
    (rules / "hetrombopag" / "1.1.0.yaml").write_text("ruleset: hetrombopag\nrules: [unclosed\n")


def _remove_site_mapping(rules: Path) -> None:
    (rules / "site" / "fhir-r4.yaml").unlink()


BREAKAGES = {"tampered release": (_tamper_release, "released file was modified"),
             "bad YAML": (_break_yaml, "YAML syntax error"),
             "missing site mapping": (_remove_site_mapping, "fhir-r4.yaml:0:0: at (document): cannot read the file")}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_server_started_with_broken_rules_stays_up_and_serves_once_they_are_fixed(breakage, rules_copy, tmp_path,
                                                                                     fhir):
    today = dt.date.today()
    fhir.reset(patient_record(today, platelets=20))
    good = tmp_path / "good"
    shutil.copytree(rules_copy, good)
    spoil, reason = BREAKAGES[breakage]
    spoil(rules_copy)
    with running_server(tmp_path, "--rules", str(rules_copy), "--no-auth", "--workers", "2",
                        ready="/healthz") as server:
        assert_not_ready(server.base_url, reason)
        worker = worker_pids(server)[0]
        os.kill(worker, signal.SIGKILL)
        wait_until_replaced(server, worker)
        assert_not_ready(server.base_url, reason)  # whichever worker answers, the replacement too

        shutil.copytree(good, rules_copy, dirs_exist_ok=True)
        assert reload(rules_copy).returncode == 0
        in_effect = versions.load_catalog(good).select("hetrombopag", today).version
        assert wait_for(lambda r: f"hetrombopag@{in_effect}" in r.get("rulesets", []), server.base_url)
        assert {card_version(c) for c in hook_cards(server.base_url, fhir)} == {in_effect}
        assert server.process.poll() is None, server.log()
    assert reason in server.log()  # serve said what is wrong with the rules when it started


def assert_not_ready(base: str, reason: str) -> None:
    """Every worker says why in /readyz, and a hook call gets 503: OperationOutcome bodies, never a 500."""
    for _ in range(6):
        readiness = requests.get(base + "/readyz", timeout=10)
        assert readiness.status_code == 503 and readiness.json()["resourceType"] == "OperationOutcome"
        assert reason in readiness.json()["issue"][0]["diagnostics"]
        call = requests.post(base + "/cds-services/hetrombopag-patient-view", timeout=10,
                             json={"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
                                   "context": {"userId": "Practitioner/dr1", "patientId": "p1"}})
        assert call.status_code == 503 and call.json()["issue"][0]["code"] == "transient"


# --- nor does any other problem at a worker's start -------------------------------------------


def test_a_worker_that_cannot_start_is_tried_again_and_the_master_lives_on(tmp_path, signer, fhir):
    """The auth config broken after the start: a replacement worker cannot build its app. gunicorn's master shuts
    down on a worker's boot-error exit; here it must keep starting workers until one can."""
    port = free_port()
    auth = write_auth_config(tmp_path, signer, f"http://127.0.0.1:{port}", [fhir.url])
    good = auth.read_text()
    with running_server(tmp_path, "--workers", "2", "--auth-config", str(auth), port=port) as server:
        auth.write_text("issuers: 5\n")
        first, second = worker_pids(server)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while server.log().count("this worker cannot start") < 2 and time.monotonic() < deadline:
            assert server.process.poll() is None, f"the master exited:\n{server.log()}"
            time.sleep(0.2)
        assert server.log().count("this worker cannot start") >= 2 and "AuthConfigError" in server.log()
        assert requests.get(server.base_url + "/readyz", timeout=10).status_code == 200  # its peer serves

        auth.write_text(good)
        os.kill(second, signal.SIGKILL)
        wait_until_replaced(server, second)
        assert wait_for(lambda r: r.get("status") == "ready", server.base_url)  # only new workers are left
        assert server.process.poll() is None, server.log()


def test_serve_refuses_a_workbench_it_cannot_secure_before_any_worker_starts(tmp_path, signer, fhir):
    """A config problem known at the start still stops `serve` at once, with its reason (workers would only retry)."""
    auth = write_auth_config(tmp_path, signer, "http://127.0.0.1:8080", [fhir.url])  # no workbench: section
    result = subprocess.run(cdsrules_command() + ["serve", "--workbench", "--auth-config", str(auth),
                                                  "--port", str(free_port()), "--db", f"sqlite:///{tmp_path / 'db'}"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "needs a 'workbench:' section" in result.stderr
