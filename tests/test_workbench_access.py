"""Who may reach the workbench, and how that holds against forged sessions, guessing, DNS rebinding and
cross-site requests; through the real Flask app."""
from __future__ import annotations

import hashlib
import hmac
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import cdsrules_command
from tests.workbench_app import TOKEN, make_app
from webhook.auth import AuthConfigError, read_config
from webhook.workbench import access
from webhook.workbench.access import COOKIE, WorkbenchConfigError
from webhook.workbench.throttle import FREE_FAILURES, MAX_ADDRESSES, MAX_WAIT_SECONDS, Throttle

DIGEST = hashlib.sha256(TOKEN.encode()).hexdigest()
TEN_YEARS = 10 * 365 * 86400


def write_secret(directory: Path, secret: str = "s3cret-" * 8) -> str:
    (directory / "session.secret").write_text(secret + "\n")
    return "session.secret"


def token_app(directory: Path, **workbench):
    section = {"token_sha256": DIGEST, "session_secret_file": write_secret(directory), **workbench}
    return make_app(directory, auth={"workbench": section})


def cookie_client(app, value: str):
    client = app.test_client()
    client.set_cookie(COOKIE, value, path="/workbench")
    return client


# --- sessions ------------------------------------------------------------------------------------


def test_a_cookie_computed_from_the_config_alone_is_refused(tmp_path):
    """The config holds the token's hash: a cookie keyed with it, as sessions once were, opens nothing."""
    app = token_app(tmp_path)
    now = int(time.time())
    expires = now + TEN_YEARS
    old_style = f"{expires}." + hmac.new(bytes.fromhex(DIGEST), f"workbench:{expires}".encode(), "sha256").hexdigest()
    message = f"workbench-session:{now}:{expires}:{DIGEST}".encode()
    new_style = f"{now}.{expires}." + hmac.new(bytes.fromhex(DIGEST), message, "sha256").hexdigest()
    for forged in (old_style, new_style):
        assert cookie_client(app, forged).get("/workbench/outcomes").status_code == 401


def test_a_cookie_longer_than_one_session_is_refused_even_when_signed(tmp_path):
    app = token_app(tmp_path)
    policy = app.extensions["cdsrules.workbench.access"]
    now = int(time.time())
    assert cookie_client(app, access.cookie_value(policy)).get("/workbench/outcomes").status_code == 200
    too_long = access.session_cookie(policy, now, now + TEN_YEARS)
    issued_later = access.session_cookie(policy, now + 3600, now + 3600 + access.COOKIE_SECONDS)
    expired = access.session_cookie(policy, now - access.COOKIE_SECONDS - 1, now - 1)
    for refused in (too_long, issued_later, expired, too_long + "é"):
        assert cookie_client(app, refused).get("/workbench/outcomes").status_code == 401


def test_a_cookie_signed_with_another_secret_is_refused(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir(), theirs.mkdir()
    app = token_app(ours)
    other = make_app(theirs, auth={"workbench": {"token_sha256": DIGEST,
                                                 "session_secret_file": write_secret(theirs, "x" * 64)}})
    foreign = access.cookie_value(other.extensions["cdsrules.workbench.access"])
    assert cookie_client(other, foreign).get("/workbench/outcomes").status_code == 200
    assert cookie_client(app, foreign).get("/workbench/outcomes").status_code == 401


def test_a_token_needs_a_session_secret_file_of_32_bytes(tmp_path):
    with pytest.raises(WorkbenchConfigError, match="session_secret_file"):
        make_app(tmp_path, auth={"workbench": {"token_sha256": DIGEST}})
    with pytest.raises(WorkbenchConfigError, match="at least 32"):
        make_app(tmp_path, auth={"workbench": {"token_sha256": DIGEST,
                                               "session_secret_file": write_secret(tmp_path, "short")}})
    with pytest.raises(WorkbenchConfigError, match="cannot read"):
        make_app(tmp_path, auth={"workbench": {"token_sha256": DIGEST, "session_secret_file": "missing.secret"}})


def test_the_schema_asks_for_the_session_secret_with_a_token(tmp_path):
    config = {"base_url": "https://cds.example", "issuers": [{"iss": "x", "jwks_url": "https://x.example/jwks"}],
              "workbench": {"token_sha256": DIGEST}}
    path = tmp_path / "auth.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(AuthConfigError, match="session_secret_file"):
        read_config(str(path))
    config["workbench"]["session_secret_file"] = "session.secret"
    path.write_text(yaml.safe_dump(config))
    assert read_config(str(path))["workbench"]["session_secret_file"] == "session.secret"


def test_serve_with_an_unreadable_session_secret_stops_with_a_message(tmp_path):
    config = {"base_url": "https://cds.example", "issuers": [{"iss": "x", "jwks_url": "https://x.example/jwks"}],
              "workbench": {"token_sha256": DIGEST, "session_secret_file": "missing.secret"}}
    (tmp_path / "auth.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(cdsrules_command() + ["serve", "--workbench", "--port", "1", "--auth-config",
                                                  str(tmp_path / "auth.yaml"), "--db",
                                                  f"sqlite:///{tmp_path / 'x.db'}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "session_secret_file: cannot read" in result.stderr
    assert "Traceback" not in result.stderr



# --- the login form -------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["/workbench/outcomes\r\nSet-Cookie: x=1", "/workbench/\nx", "/workbench/\x00",
                                    "/workbench/\x7f", "/workbench/\u2028", "/workbench/\t"])
def test_a_next_with_control_characters_goes_to_the_start_page(tmp_path, target):
    client = token_app(tmp_path).test_client()
    assert client.get("/workbench/login", query_string={"next": target}).status_code == 200
    login = client.post("/workbench/login", data={"token": TOKEN, "next": target})
    assert login.status_code == 302 and login.headers["Location"] == "/workbench/"
    assert "x=1" not in login.headers.getlist("Set-Cookie")[0]


def test_a_next_inside_the_workbench_is_kept(tmp_path):
    client = token_app(tmp_path).test_client()
    for target in ("/workbench/outcomes?since=2026-01-01", "/workbench/rulesets/hetrombopag/1.0.0", "/workbench/é"):
        login = client.post("/workbench/login", data={"token": TOKEN, "next": target})
        assert login.status_code == 302 and login.headers["Location"].startswith("/workbench/")


# --- guessing the token ---------------------------------------------------------------------------


def test_a_burst_of_wrong_tokens_is_throttled_after_a_few(tmp_path):
    client = token_app(tmp_path).test_client()
    statuses = [client.post("/workbench/login", data={"token": f"guess-{n}"}).status_code for n in range(200)]
    assert statuses[:FREE_FAILURES] == [401] * FREE_FAILURES
    assert set(statuses[FREE_FAILURES:]) == {429}


def test_a_throttled_address_waits_even_with_the_right_token_then_gets_in(tmp_path):
    client = token_app(tmp_path).test_client()
    for n in range(FREE_FAILURES):
        assert client.post("/workbench/login", data={"token": f"guess-{n}"}).status_code == 401
    waiting = client.post("/workbench/login", data={"token": TOKEN})
    assert waiting.status_code == 429 and waiting.headers["Retry-After"] == "1"
    assert "try again later" in waiting.get_data(as_text=True)
    bearer = client.get("/workbench/outcomes", headers={"Authorization": f"Bearer {TOKEN}"})
    assert bearer.status_code == 429  # a bearer token is a guess too
    elsewhere = {"REMOTE_ADDR": "127.0.0.2"}
    assert client.post("/workbench/login", data={"token": "x"}, environ_base=elsewhere).status_code == 401
    time.sleep(1.1)
    assert client.post("/workbench/login", data={"token": TOKEN}).status_code == 302
    assert client.post("/workbench/login", data={"token": "typo"}).status_code == 401  # cleared by the right one


def test_the_wait_doubles_up_to_a_limit_and_is_forgotten_after_an_hour():
    now = [1000.0]
    throttle = Throttle(clock=lambda: now[0])
    for _ in range(FREE_FAILURES):
        assert throttle.wait_seconds("a") == 0
        throttle.failed("a")
    waits = []
    for _ in range(12):
        waits.append(throttle.wait_seconds("a"))
        now[0] += waits[-1]
        throttle.failed("a")
    assert waits[:4] == [1, 2, 4, 8] and max(waits) == MAX_WAIT_SECONDS
    now[0] += 3601
    assert throttle.wait_seconds("a") == 0


def test_the_throttle_remembers_a_bounded_number_of_addresses_the_oldest_forgotten():
    throttle = Throttle()
    for _ in range(FREE_FAILURES + 1):
        throttle.failed("oldest")
    assert throttle.wait_seconds("oldest") > 0
    for n in range(MAX_ADDRESSES):
        throttle.failed(f"address-{n}")
    assert throttle.wait_seconds("oldest") == 0


# --- DNS rebinding --------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "localhost:8080", "127.0.0.1:5000", "[::1]:8080", "LocalHost",
                                  "cds.test:8443"])
def test_without_authentication_loopback_and_allowed_names_are_served(tmp_path, host):
    client = make_app(tmp_path, ALLOWED_HOSTS=["cds.test"]).test_client()
    assert client.get("/workbench/outcomes", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8080", "localhost.attacker.example",
                                  "127.0.0.1.nip.io", "bad host", "[::1"])
def test_without_authentication_another_host_name_is_refused(tmp_path, host):
    client = make_app(tmp_path).test_client()
    for response in (client.get("/workbench/outcomes", headers={"Host": host}),
                     client.post("/workbench/check", data={"text": "id: x"}, headers={"Host": host})):
        assert response.status_code == 421
        assert "DNS rebinding" in response.get_data(as_text=True)
    assert client.get("/workbench/login", headers={"Host": host}).status_code == 421


def test_with_authentication_the_base_url_host_is_served(tmp_path):
    client = token_app(tmp_path).test_client()  # base_url https://cds.example
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/workbench/outcomes", headers={**bearer, "Host": "cds.example"}).status_code == 200
    assert client.get("/workbench/outcomes", headers={**bearer, "Host": "127.0.0.1:8080"}).status_code == 200
    assert client.get("/workbench/outcomes", headers={**bearer, "Host": "attacker.example"}).status_code == 421


# --- cross-site requests --------------------------------------------------------------------------

FOREIGN = [{"Origin": "https://attacker.example"}, {"Origin": "null"}, {"Origin": "http://localhost.attacker.example"},
           {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "cross-site", "Origin": "http://localhost"}]
OURS = [{}, {"Origin": "http://localhost"}, {"Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"}]


@pytest.mark.parametrize("headers", FOREIGN)
def test_a_post_from_another_site_is_refused(tmp_path, headers):
    client = make_app(tmp_path).test_client()
    response = client.post("/workbench/check", data={"text": "id: x\n"}, headers=headers)
    assert response.status_code == 403 and "Refused" in response.get_data(as_text=True)
    assert client.post("/workbench/check.json", json={"text": "id: x\n"}, headers=headers).status_code == 403


@pytest.mark.parametrize("headers", OURS)
def test_a_post_from_our_own_pages_or_no_browser_is_served(tmp_path, headers):
    client = make_app(tmp_path).test_client()
    assert client.post("/workbench/check", data={"text": "id: x\n"}, headers=headers).status_code == 200


def test_another_site_may_link_to_a_page(tmp_path):
    client = make_app(tmp_path).test_client()
    for headers in FOREIGN:
        assert client.get("/workbench/outcomes", headers=headers).status_code == 200


def test_another_site_cannot_log_the_user_in_or_out(tmp_path):
    client = token_app(tmp_path).test_client()
    forged = client.post("/workbench/login", data={"token": TOKEN}, headers={"Origin": "https://attacker.example"})
    assert forged.status_code == 403 and "Set-Cookie" not in forged.headers
    ours = client.post("/workbench/login", data={"token": TOKEN}, headers={"Origin": "https://cds.example"})
    assert ours.status_code == 302 and "Set-Cookie" in ours.headers
    assert client.post("/workbench/logout", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert client.get("/workbench/outcomes").status_code == 200  # still logged in
