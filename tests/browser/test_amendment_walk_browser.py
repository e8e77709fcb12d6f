"""The whole amendment path in a real browser, with two users: an author opens a released version, edits it as a
draft, changes a parameter in the amendment form, saves the draft and proposes it from a date after the server's
today; an approver reviews its diff and coverage and approves; the release is recorded, and the running server
(gunicorn, no restart) serves the previous version until the effective date and the new one from it, as CDS Hooks
calls show; the new version's dossier opens and its PDF is served.

The server's today is pinned through its CLOCK setting, read from a file on each call (tests/browser/serve_dated.py),
so the test moves it across the effective date. Each page visited is kept as a full-page screenshot, numbered in
order, in the folder CDSRULES_SCREENSHOTS names (else the test's own temporary folder)."""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from tests.browser.live import CHROMIUM, launch
from tests.browser.test_four_eyes_browser import browser, governed_rules, logged_in, users_config  # noqa: F401
from tests.conftest import free_port
from tests.fhir_server import FhirData
from tests.records import patient_record, prefetch_for

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium")
pytest.importorskip("playwright.sync_api")

STARTED_ON = dt.date(2026, 12, 10)  # the server's today when the walk starts: 1.0.1 is in effect
EFFECTIVE = STARTED_ON + dt.timedelta(days=14)  # the amendment's effective date, in the server's future
BASE, AMENDED = "1.0.1", "1.2.0"  # 1.1.0 is a draft file in the folder, so the proposal skips it
PARAMETER, VALUE = "ecog_window_days", 60  # widened: the tests still pass, the decisions it reaches may change


@pytest.fixture(scope="module")
def server(tmp_path_factory, signer):
    directory = tmp_path_factory.mktemp("amendment-walk")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    rules = governed_rules(directory)
    folder = rules / "hetrombopag"
    # The author's cases for the amended version, beside it and outside its hash: its coverage needs them.
    shutil.copyfile(folder / f"{BASE}.tests.yaml", folder / f"{AMENDED}.tests.yaml")
    today = directory / "today.txt"
    today.write_text(STARTED_ON.isoformat() + "\n")
    command = [sys.executable, "-m", "tests.browser.serve_dated", "--date-file", str(today),
               "--rules", str(rules), "--host", "127.0.0.1", "--port", str(port), "--workbench", "--workers", "1",
               "--auth-config", str(users_config(directory, signer, base_url)),
               "--db", f"sqlite:///{directory / 'db.sqlite'}"]
    live = launch(command, port, directory / "server.log", timeout=60)
    live.rules, live.today = rules, today
    yield live
    live.stop()


class Screenshots:
    """Full-page screenshots, numbered in the order the pages were visited."""

    def __init__(self, folder: Path):
        self.folder, self.count = folder, 0
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, page, name: str) -> None:
        self.count += 1
        page.screenshot(path=str(self.folder / f"{self.count:02d}-{name}.png"), full_page=True)


def deciding_version(server, signer, on: dt.date) -> str:
    """The version named by the cards of a patient-view call, as an EHR makes it, with the server's today `on`."""
    server.today.write_text(on.isoformat() + "\n")
    service = next(s for s in requests.get(server.base_url + "/cds-services", timeout=10, headers=_bearer(
        server, signer, "/cds-services")).json()["services"] if s["id"] == "hetrombopag-patient-view")
    record = FhirData(patient_record(on, platelets=40))
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/dr1", "patientId": "p1"},
            "prefetch": prefetch_for(service["prefetch"], record, "p1")}
    path = "/cds-services/hetrombopag-patient-view"
    answer = requests.post(server.base_url + path, json=body, headers=_bearer(server, signer, path), timeout=10)
    assert answer.status_code == 200, answer.text
    cards = answer.json()["cards"]
    assert cards, "this patient's record calls for advice"
    named = {card["extension"]["cdsrules.provenance"]["version"] for card in cards}
    assert len(named) == 1, named
    return named.pop()


def _bearer(server, signer, path: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {signer.token(server.base_url + path)}"}


def reloaded_since(server, loaded_at: str, seconds: float = 30) -> None:
    """Wait until the running server has loaded the rules again after the release (the reload marker)."""
    deadline = time.monotonic() + seconds
    while requests.get(server.base_url + "/readyz", timeout=5).json()["rulesLoadedAt"] == loaded_at:
        assert time.monotonic() < deadline, "the server did not reload after the release"
        time.sleep(0.5)


def test_an_amendment_walks_from_the_form_to_the_served_release(browser, server, signer, tmp_path):  # noqa: F811
    shots = Screenshots(Path(os.environ.get("CDSRULES_SCREENSHOTS") or tmp_path / "screenshots"))
    assert deciding_version(server, signer, STARTED_ON) == BASE

    # ana, an author: the released version, edited as a draft through the amendment form.
    ana = logged_in(browser, server, "ana")
    ana.goto(f"{server.base_url}/workbench/rulesets/hetrombopag/{BASE}")
    shots.take(ana, "version")
    ana.click("text=Edit as a draft")
    assert f"from=hetrombopag%40{BASE}" in ana.url or f"from=hetrombopag@{BASE}" in ana.url
    field = ana.locator(f"#amend-parameters input[data-name={PARAMETER}]")
    field.fill(str(VALUE))
    field.press("Tab")  # leaving the field sends the edit
    ana.locator("#amend-status[data-state=good]").wait_for()
    diff = ana.locator("#amend-diff").inner_text()
    assert f"{PARAMETER}" in diff and f"value: {VALUE}" in diff, diff
    assert f"value: {VALUE}" in ana.locator("#draft-text").input_value(), "the YAML is rewritten"
    assert f"Proposed version {AMENDED}" in ana.locator("#proposal").inner_text()
    assert ana.locator("#save-version").input_value() == AMENDED
    shots.take(ana, "amend-form")

    ana.locator("#editor-status[data-state=good]").wait_for()  # the editor's own check of the new text is done
    ana.click("#save-button")
    assert f"Saved as draft hetrombopag@{AMENDED}" in ana.locator("#saved-draft").inner_text()
    shots.take(ana, "saved-draft")
    ana.goto(server.base_url + "/workbench/")
    row = ana.locator(f"tr.saved-draft[data-version='{AMENDED}']")
    assert "draft (saved)" in row.inner_text()
    row.locator("summary").click()
    shots.take(ana, "rulesets-saved-draft")
    ana.goto(f"{server.base_url}/workbench/check?draft=hetrombopag@{AMENDED}")
    ana.fill("#propose-saved-effective-from", EFFECTIVE.isoformat())
    ana.select_option("#propose-saved-applies-to", "all")
    ana.fill("#propose-saved-note", "Amendment 2: ECOG within 60 days")
    shots.take(ana, "propose-saved-draft")
    ana.click("#propose-saved-button")
    assert "/workbench/proposals/" in ana.url and ana.locator("#proposal-status").inner_text() == "open"
    assert ana.locator("#review-form").count() == 0, "the author does not review her own proposal"
    proposal_url = ana.url
    proposed_sha256 = ana.locator("#proposal-sha256").inner_text().removeprefix("sha256 ").strip()
    shots.take(ana, "proposed")

    # ben, an approver: the review shows what governance approves; his approval releases it.
    ben = logged_in(browser, server, "ben")
    ben.goto(server.base_url + "/workbench/proposals")
    shots.take(ben, "proposals")
    ben.locator("#proposals a").first.click()
    assert ben.url == proposal_url
    assert f"hetrombopag {BASE} → {AMENDED}" in ben.locator("#diff").inner_text()
    assert PARAMETER in ben.locator("#diff").inner_text() and "Behavioural impact" in ben.locator("#diff").inner_text()
    assert "threshold met" in ben.locator("#coverage").inner_text()
    assert ben.locator("#effective-from").inner_text() == EFFECTIVE.isoformat()
    assert "all patients" in ben.locator("#applies-to").inner_text()
    assert "if it applies to all patients" in ben.locator("#choice-counts").inner_text()
    assert "passed" in ben.locator("#tests").inner_text() and ben.locator("#pending").count() == 1
    shots.take(ben, "review")
    ben.click("#proposal-dossier")  # the dossier of the proposed text, before it is released
    assert proposed_sha256 in ben.locator("body").inner_text()
    shots.take(ben, "proposal-dossier")
    ben.goto(proposal_url)
    loaded_at = requests.get(server.base_url + "/readyz", timeout=5).json()["rulesLoadedAt"]
    ben.fill("#review-form textarea[name=comment]", "the ECOG window as amendment 2 says")
    ben.click("#approve")
    assert ben.locator("#proposal-status").inner_text() == "released"
    shots.take(ben, "released")

    folder = server.rules / "hetrombopag"
    released = (folder / f"{AMENDED}.yaml").read_bytes()
    assert hashlib.sha256(released).hexdigest() == proposed_sha256
    entry = yaml.safe_load((folder / "releases.yaml").read_text())["releases"][-1]
    assert (entry["version"], entry["sha256"], entry["proposed_by"]) == (AMENDED, proposed_sha256, "ana")
    assert entry["effective_from"] == EFFECTIVE.isoformat() and entry.get("applies_to", "all") == "all"
    assert [a["approver"] for a in entry["approvals"]] == ["ben"] and entry["approved_by"] == "ben"

    # Served without a restart: the previous version until the effective date, the new one from it.
    reloaded_since(server, loaded_at)
    assert deciding_version(server, signer, EFFECTIVE - dt.timedelta(days=1)) == BASE
    ben.goto(server.base_url + "/workbench/")
    status = ben.locator(f"tr[data-ruleset='hetrombopag'][data-version='{AMENDED}']").inner_text()
    assert "not yet in effect" in status, status
    shots.take(ben, "rulesets-before-effective-date")
    assert deciding_version(server, signer, EFFECTIVE) == AMENDED
    ben.goto(server.base_url + "/workbench/")
    status = ben.locator(f"tr[data-ruleset='hetrombopag'][data-version='{AMENDED}']").inner_text()
    assert "released" in status and "not yet" not in status and "ben" in status, status
    shots.take(ben, "rulesets-from-effective-date")

    # The dossier governance files, from the released version's page, and its PDF.
    ben.goto(f"{server.base_url}/workbench/rulesets/hetrombopag/{AMENDED}")
    shots.take(ben, "released-version")
    ben.click("text=Release dossier")
    assert ben.url.endswith(f"/workbench/rulesets/hetrombopag/{AMENDED}/dossier")
    dossier = ben.locator("body").inner_text()
    assert AMENDED in dossier and proposed_sha256 in dossier and "ana" in dossier
    shots.take(ben, "dossier")
    pdf = ben.request.get(ben.url + ".pdf")
    assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf" and pdf.body()[:5] == b"%PDF-"
