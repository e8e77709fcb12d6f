"""Four eyes in a real browser: an author proposes a checked draft from the check page, an approver logs in with a
token of their own, reviews it and approves, and the version is listed as released; against the real gunicorn
server started with an auth config naming both users."""
from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.browser.live import CHROMIUM, CHROMIUM_ARGS, REPO, SCREENSHOTS, launch
from tests.conftest import cdsrules_command, free_port, write_auth_config

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at "
                                                               "/usr/bin/chromium (.ci/run installs it with apt)")
playwright_api = pytest.importorskip("playwright.sync_api")
TOKENS = {"ana": "ana-s-own-workbench-token", "ben": "ben-s-own-workbench-token"}
ROLES = {"ana": ["author"], "ben": ["approver"]}


def governed_rules(directory: Path) -> Path:
    rules = directory / "rules"
    shutil.copytree(REPO / "rules", rules)
    manifest = rules / "hetrombopag" / "releases.yaml"
    data = yaml.safe_load(manifest.read_text())
    manifest.write_text(yaml.safe_dump({"governance": {"approvals_required": 1}, **data}, sort_keys=False))
    return rules


def users_config(directory: Path, signer, base_url: str) -> Path:
    path = write_auth_config(directory, signer, base_url, [])
    config = yaml.safe_load(path.read_text())
    (directory / "session.secret").write_text("a-session-secret-for-the-browser-test-0123456789\n")
    config["workbench"] = {"session_secret_file": "session.secret", "users": [
        {"name": name, "token_sha256": hashlib.sha256(token.encode()).hexdigest(), "roles": ROLES[name]}
        for name, token in TOKENS.items()]}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, signer):
    directory = tmp_path_factory.mktemp("four-eyes-live")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    rules = governed_rules(directory)
    command = cdsrules_command() + [
        "serve", "--rules", str(rules), "--host", "127.0.0.1", "--port", str(port), "--workbench", "--workers", "1",
        "--auth-config", str(users_config(directory, signer, base_url)),
        "--db", f"sqlite:///{directory / 'db.sqlite'}"]
    live = launch(command, port, directory / "server.log", timeout=60)
    live.rules = rules
    yield live
    live.stop()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def logged_in(browser, server, name: str):
    """A browser session of its own for one user, logged in with their token through the login form."""
    tab = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
    tab.set_default_timeout(30000)
    tab.goto(server.base_url + "/workbench/")
    assert "/workbench/login" in tab.url
    tab.fill("input[name=token]", TOKENS[name])
    tab.click("button[type=submit]")
    assert tab.locator(".logout span").inner_text() == name
    return tab


def test_an_author_proposes_and_another_user_approves_and_the_version_is_released(browser, server):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    ana = logged_in(browser, server, "ana")
    ana.goto(server.base_url + "/workbench/check?from=hetrombopag@1.1.0")
    ana.click("#check-button")
    assert "Valid" in ana.locator("#verdict").inner_text()
    ana.fill("#propose-form input[name=note]", "Amendment 1")
    ana.click("#propose-button")
    assert "/workbench/proposals/" in ana.url
    assert ana.locator("#proposal-status").inner_text() == "open"
    assert ana.locator("#review-form").count() == 0, "an author who is not an approver gets no review form"
    proposal_url = ana.url

    ben = logged_in(browser, server, "ben")
    ben.goto(server.base_url + "/workbench/proposals")
    ben.locator("#proposals a").first.click()
    assert ben.url == proposal_url
    assert "hetrombopag" in ben.locator("#diff").inner_text() and "ana" in ben.locator("#proposed-by").inner_text()
    ben.fill("#review-form textarea[name=comment]", "matches the amendment")
    ben.click("#approve")
    assert ben.locator("#proposal-status").inner_text() == "released"
    ben.screenshot(path=str(SCREENSHOTS / "workbench-proposal-released.png"), full_page=True)

    ben.goto(server.base_url + "/workbench/")
    row = ben.locator("tr[data-ruleset='hetrombopag'][data-version='1.1.0']")
    assert "released" in row.inner_text() and "ben" in row.inner_text()
    released = (server.rules / "hetrombopag" / "1.1.0.yaml").read_bytes()
    assert released == (REPO / "rules" / "hetrombopag" / "1.1.0.yaml").read_bytes(), "the bytes proposed, as typed"
    entry = yaml.safe_load((server.rules / "hetrombopag" / "releases.yaml").read_text())["releases"][-1]
    assert (entry["version"], entry["proposed_by"], entry["approvals"][0]["approver"]) == ("1.1.0", "ana", "ben")
    assert "hetrombopag@1.1.0" in served(server), "effective today, served without a restart"


def served(server, seconds: float = 30) -> list[str]:
    """The rulesets the running server serves once it has reloaded after the release (or when time is up)."""
    deadline = time.monotonic() + seconds
    while True:
        rulesets = requests.get(server.base_url + "/readyz", timeout=5).json()["rulesets"]
        if "hetrombopag@1.1.0" in rulesets or time.monotonic() > deadline:
            return rulesets
        time.sleep(0.5)
