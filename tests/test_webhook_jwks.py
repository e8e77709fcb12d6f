"""Keys fetched from an issuer's jwks_url, through the app: real JWKS endpoints over HTTPS on loopback that count
their requests. Made-up kids and failing or slow endpoints must not make the service fetch again and again, nor
hold up calls from another issuer."""
from __future__ import annotations

import threading
import time
import uuid
import warnings
from itertools import pairwise

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.conftest import ISSUER, Signer
from tests.jwks_server import JwksServer, write_loopback_certificate
from webhook.auth import JWKS_MAX_BACKOFF_SECONDS, JWKS_MIN_INTERVAL_SECONDS, backoff_seconds

pytestmark = pytest.mark.timeout(60)

BASE = "http://localhost"
DISCOVERY = "/cds-services"
ISSUER_B = "https://other-ehr.test.example"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return write_loopback_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def start_jwks_server(certificate, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # the service trusts the loopback certificate
    servers: list[JwksServer] = []

    def start(jwks: dict) -> JwksServer:
        servers.append(JwksServer(certificate, jwks).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def client_for(make_app, tmp_path, jwks_urls: dict[str, str]):
    """A test client of an app that trusts each issuer with the keys at its URL."""
    config = {"base_url": BASE, "issuers": [{"iss": iss, "jwks_url": url} for iss, url in jwks_urls.items()]}
    (tmp_path / "auth.yaml").write_text(yaml.safe_dump(config))
    return make_app(AUTH_CONFIG=str(tmp_path / "auth.yaml")).test_client()


def status(client, token: str) -> int:
    return client.get(DISCOVERY, headers={"Authorization": f"Bearer {token}"}).status_code


def claims(iss: str = ISSUER) -> dict:
    now = int(time.time())
    return {"iss": iss, "aud": BASE + DISCOVERY, "iat": now, "exp": now + 60, "jti": str(uuid.uuid4())}


def token_with_a_made_up_kid(iss: str) -> str:
    return jwt.encode(claims(iss), ec.generate_private_key(ec.SECP384R1()), algorithm="ES384",
                      headers={"kid": str(uuid.uuid4())})


def test_keys_are_fetched_once_and_made_up_kids_fetch_nothing_more(make_app, tmp_path, signer, start_jwks_server):
    server = start_jwks_server(signer.jwks())
    client = client_for(make_app, tmp_path, {ISSUER: server.url})
    assert status(client, signer.token(BASE + DISCOVERY)) == 200
    for _ in range(20):
        assert status(client, token_with_a_made_up_kid(ISSUER)) == 401
    assert status(client, signer.token(BASE + DISCOVERY)) == 200
    assert server.hits == 1


def test_a_failing_jwks_endpoint_is_not_asked_again_at_once(make_app, tmp_path, signer, start_jwks_server, caplog):
    server = start_jwks_server(signer.jwks())
    server.mode = "fail"
    client = client_for(make_app, tmp_path, {ISSUER: server.url})
    for _ in range(10):
        assert status(client, signer.token(BASE + DISCOVERY)) == 401
        assert status(client, token_with_a_made_up_kid(ISSUER)) == 401
    assert server.hits == 1
    assert f"JWKS fetch from {server.url} failed" in caplog.text
    server.mode = "serve"  # back, but the service waits out its back-off before it asks again
    assert status(client, signer.token(BASE + DISCOVERY)) == 401
    assert server.hits == 1


def test_a_slow_jwks_endpoint_holds_up_one_call_then_none(make_app, tmp_path, signer, start_jwks_server):
    """As in a worker with one thread: calls one after another."""
    signer_b = Signer()
    slow, fine = start_jwks_server(signer.jwks()), start_jwks_server(signer_b.jwks())
    slow.mode = "hold"
    client = client_for(make_app, tmp_path, {ISSUER: slow.url, ISSUER_B: fine.url})
    for _ in range(5):
        assert status(client, token_with_a_made_up_kid(ISSUER)) == 401
    for _ in range(3):
        assert status(client, signer_b.token(BASE + DISCOVERY, iss=ISSUER_B)) == 200
    assert slow.holding and slow.hits == 1 and fine.hits == 1


def test_issuer_b_is_answered_while_a_call_waits_for_issuer_a_keys(make_app, tmp_path, signer, start_jwks_server):
    """As in a worker with threads: a fetch under way for issuer A holds no lock that issuer B's calls need."""
    signer_b = Signer()
    slow, fine = start_jwks_server(signer.jwks()), start_jwks_server(signer_b.jwks())
    client = client_for(make_app, tmp_path, {ISSUER: slow.url, ISSUER_B: fine.url})
    assert status(client, signer_b.token(BASE + DISCOVERY, iss=ISSUER_B)) == 200  # B's keys are cached
    slow.mode = "hold"
    waiting = threading.Thread(target=status, args=(client, token_with_a_made_up_kid(ISSUER)))
    waiting.start()
    assert slow.arrived.wait(10), "issuer A's keys were never asked for"
    answers = [status(client, signer_b.token(BASE + DISCOVERY, iss=ISSUER_B)) for _ in range(3)]
    still_waiting = waiting.is_alive()
    slow.release()
    waiting.join(10)
    assert answers == [200, 200, 200]
    assert still_waiting, "issuer B's calls were answered only once issuer A's fetch was over"
    assert fine.hits == 1


def test_a_weak_key_at_a_jwks_url_is_left_out(make_app, tmp_path, signer, start_jwks_server, caplog):
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    public = jwt.algorithms.RSAAlgorithm.to_jwk(short.public_key(), as_dict=True)
    jwks = signer.jwks()
    jwks["keys"].append({**public, "kid": "short", "alg": "RS384"})
    client = client_for(make_app, tmp_path, {ISSUER: start_jwks_server(jwks).url})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)  # PyJWT warns as it signs: that is the point
        weak_token = jwt.encode(claims(), short, algorithm="RS384", headers={"kid": "short"})
    assert status(client, weak_token) == 401
    assert status(client, signer.token(BASE + DISCOVERY)) == 200
    assert "key 'short' left out: an RSA key of 1024 bits" in caplog.text


def test_the_back_off_doubles_from_the_minimum_interval_to_its_cap():
    waits = [backoff_seconds(failures) for failures in range(1, 8)]
    assert waits[0] == JWKS_MIN_INTERVAL_SECONDS
    assert all(later in (2 * earlier, JWKS_MAX_BACKOFF_SECONDS) for earlier, later in pairwise(waits))
    assert waits[-1] == JWKS_MAX_BACKOFF_SECONDS
