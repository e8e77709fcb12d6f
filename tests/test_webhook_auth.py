"""JWT verification through the app: ES384 tokens from an allowlisted issuer pass; everything else is 401 with no
detail. Keys are generated here; the JWKS and the auth config are files, as in production."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.cds_conformance import assert_conformant
from tests.conftest import (
    ISSUER,
    TODAY,
    TOKEN,
    Signer,
    build_app,
    order_sign_request,
    patient_record,
    write_auth_config,
)

pytestmark = pytest.mark.timeout(60)

BASE = "http://localhost"  # what Flask's test client calls
DISCOVERY = "/cds-services"
SERVICE = "/cds-services/hetrombopag-order-sign"


@pytest.fixture(scope="module")
def secured_app(tmp_path_factory, signer, fhir_server):
    directory = tmp_path_factory.mktemp("auth")
    return build_app(directory, fhir_server,
                     AUTH_CONFIG=str(write_auth_config(directory, signer, BASE, [fhir_server.url])))


@pytest.fixture
def secured(secured_app):
    return secured_app.test_client()


def call(client, token: str | None, path: str = DISCOVERY, body: dict | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is None:
        return client.get(path, headers=headers)
    return client.post(path, json=body, headers=headers)


def assert_refused(response) -> None:
    assert response.status_code == 401
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "diagnostics" not in outcome["issue"][0], "a refusal says nothing about why"


def test_a_valid_es384_token_is_accepted(secured, signer):
    assert call(secured, signer.token(BASE + DISCOVERY)).status_code == 200
    response = call(secured, signer.token(BASE + SERVICE), SERVICE, order_sign_request("p1", []))
    assert response.status_code == 200
    assert_conformant(response.get_json())


def test_an_rs384_token_from_an_rsa_key_is_accepted(make_app, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    (tmp_path / "rsa.jwks.json").write_text(json.dumps({"keys": [{**public, "kid": "rsa-1"}]}))
    (tmp_path / "auth.yaml").write_text(
        f"base_url: {BASE}\nissuers:\n  - iss: {ISSUER}\n    jwks_file: rsa.jwks.json\n")
    client = make_app(AUTH_CONFIG=str(tmp_path / "auth.yaml")).test_client()
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": BASE + DISCOVERY, "iat": now, "exp": now + 60, "jti": str(uuid.uuid4())}
    token = jwt.encode(claims, key, algorithm="RS384", headers={"kid": "rsa-1"})
    assert call(client, token).status_code == 200
    rs256 = jwt.encode({**claims, "jti": str(uuid.uuid4())}, key, algorithm="RS256", headers={"kid": "rsa-1"})
    assert_refused(call(client, rs256))


def test_no_token_is_refused(secured):
    assert_refused(call(secured, None))
    assert_refused(secured.get(DISCOVERY, headers={"Authorization": "Basic dXNlcjpwYXNz"}))
    assert_refused(call(secured, None, SERVICE, order_sign_request("p1", [])))
    assert_refused(secured.post(f"{SERVICE}/feedback", json={"feedback": []}))


def test_wrong_audience_is_refused(secured, signer):
    assert_refused(call(secured, signer.token(BASE + SERVICE)))  # minted for another URL
    assert_refused(call(secured, signer.token("http://evil.example" + DISCOVERY)))


def test_expired_token_is_refused_beyond_the_leeway(secured, signer):
    now = int(time.time())
    assert_refused(call(secured, signer.token(BASE + DISCOVERY, iat=now - 300, exp=now - 61)))
    assert call(secured, signer.token(BASE + DISCOVERY, iat=now - 300, exp=now - 30)).status_code == 200


def test_a_token_living_longer_than_five_minutes_is_refused(secured, signer, caplog):
    now = int(time.time())
    assert call(secured, signer.token(BASE + DISCOVERY, iat=now, exp=now + 300)).status_code == 200
    with caplog.at_level(logging.INFO, logger="webhook.auth"):
        assert_refused(call(secured, signer.token(BASE + DISCOVERY, iat=now, exp=now + 301)))
        assert_refused(call(secured, signer.token(BASE + DISCOVERY, iat=now - 3600, exp=now + 10 * 365 * 86400)))
        assert_refused(call(secured, signer.token(BASE + DISCOVERY, iat=now + 30, exp=now + 20)))  # exp before iat
    assert "lifetime exp - iat of 301 s is not within 1..300 s" in caplog.text


def test_the_maximum_lifetime_is_a_setting(make_app, signer, tmp_path):
    config = write_auth_config(tmp_path, signer, BASE, [])
    config.write_text(config.read_text() + "max_token_lifetime_seconds: 3600\n")
    client = make_app(AUTH_CONFIG=str(config)).test_client()
    now = int(time.time())
    assert call(client, signer.token(BASE + DISCOVERY, iat=now, exp=now + 3600)).status_code == 200
    assert_refused(call(client, signer.token(BASE + DISCOVERY, iat=now, exp=now + 3601)))


def test_not_yet_valid_token_is_refused(secured, signer):
    assert_refused(call(secured, signer.token(BASE + DISCOVERY, nbf=int(time.time()) + 600)))


@pytest.mark.parametrize("claim", ["iat", "jti", "exp", "iss"])
def test_a_required_claim_missing_is_refused(secured, signer, claim):
    assert_refused(call(secured, signer.token(BASE + DISCOVERY, **{claim: None})))


@pytest.mark.parametrize("claim,as_json", [("exp", str), ("iat", str), ("nbf", str), ("nbf", bool)])
def test_a_time_claim_that_is_not_a_json_number_is_refused(secured, signer, claim, as_json):
    now = int(time.time())
    times = {"iat": now, "exp": now + 60, "nbf": now}
    times[claim] = as_json(times[claim])  # "1796234583" or true
    assert_refused(call(secured, signer.token(BASE + DISCOVERY, **times)))
    fractional = signer.token(BASE + DISCOVERY, iat=now + 0.5, exp=now + 60.5, nbf=now - 0.5)
    assert call(secured, fractional).status_code == 200  # any JSON number will do


def test_alg_none_is_refused(secured):
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": BASE + DISCOVERY, "iat": now, "exp": now + 60, "jti": str(uuid.uuid4())}
    token = jwt.encode(claims, None, algorithm="none", headers={"kid": "test-key-1"})
    assert_refused(call(secured, token))
    assert_refused(call(secured, token.rsplit(".", 1)[0] + "."))


def test_hmac_with_the_public_key_as_secret_is_refused(secured, signer):
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": BASE + DISCOVERY, "iat": now, "exp": now + 60, "jti": str(uuid.uuid4())}
    # The classic confusion attack: HMAC keyed with the server's public key (PyJWT refuses to mint it, so by hand).
    secret = signer.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = b".".join(_b64(json.dumps(part).encode())
                              for part in ({"alg": "HS384", "typ": "JWT", "kid": "test-key-1"}, claims))
    signature = _b64(hmac.new(secret, signing_input, hashlib.sha384).digest())
    assert_refused(call(secured, (signing_input + b"." + signature).decode()))


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def test_a_token_signed_by_another_key_is_refused(secured):
    impostor = Signer()  # same kid and issuer, different key
    assert_refused(call(secured, impostor.token(BASE + DISCOVERY)))


def test_unknown_issuer_and_unknown_kid_are_refused(secured, signer):
    assert_refused(call(secured, signer.token(BASE + DISCOVERY, iss="https://other.example")))
    key = ec.generate_private_key(ec.SECP384R1())
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": BASE + DISCOVERY, "iat": now, "exp": now + 60, "jti": str(uuid.uuid4())}
    assert_refused(call(secured, jwt.encode(claims, key, algorithm="ES384", headers={"kid": "nope"})))


def test_the_log_says_why_a_token_is_refused(secured, signer, caplog):
    with caplog.at_level(logging.INFO, logger="webhook.auth"):
        assert_refused(call(secured, signer.token(BASE + DISCOVERY, iss="https://other.example")))
        assert_refused(call(secured, signer.token(BASE + SERVICE)))  # minted for another path
    reasons = [r.getMessage() for r in caplog.records if r.name == "webhook.auth"]
    assert len(reasons) == 2
    assert "issuer 'https://other.example' not trusted" in reasons[0]
    assert "InvalidAudienceError: Audience doesn't match" in reasons[1]


def test_a_replayed_jti_is_refused(secured, signer):
    token = signer.token(BASE + DISCOVERY)
    assert call(secured, token).status_code == 200
    assert_refused(call(secured, token))


def test_tenants_restrict_tokens(make_app, signer, tmp_path):
    config = write_auth_config(tmp_path, signer, BASE, [], tenants=["ward-7"])
    client = make_app(AUTH_CONFIG=str(config)).test_client()
    assert call(client, signer.token(BASE + DISCOVERY, tenant="ward-7")).status_code == 200
    assert_refused(call(client, signer.token(BASE + DISCOVERY, tenant="ward-8")))
    assert_refused(call(client, signer.token(BASE + DISCOVERY)))


def test_cors_preflight_needs_no_token(secured):
    response = secured.options(SERVICE, headers={"Origin": "https://ehr.example",
                                                 "Access-Control-Request-Method": "POST",
                                                 "Access-Control-Request-Headers": "authorization, content-type"})
    assert response.status_code == 200
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed


def test_health_needs_no_token(secured):
    assert secured.get("/healthz").status_code == 200
    assert secured.get("/readyz").status_code == 200


def test_with_auth_only_allowlisted_fhir_servers_are_fetched_from(secured, signer, fhir):
    fhir.reset(patient_record(TODAY))
    draft = {"resourceType": "MedicationRequest", "id": "d1", "status": "draft", "intent": "order",
             "medicationCodeableConcept": {"text": "Hetrombopag"}, "subject": {"reference": "Patient/p1"}}
    foreign = order_sign_request("p1", [draft], fhirServer="http://127.0.0.2:9/fhir",
                                 fhirAuthorization={"access_token": TOKEN, "token_type": "Bearer"})
    response = call(secured, signer.token(BASE + SERVICE), SERVICE, foreign)
    assert response.status_code == 412 and "not allowed" in response.get_json()["issue"][0]["diagnostics"]
    allowed = {**foreign, "fhirServer": fhir.url, "hookInstance": str(uuid.uuid4())}
    response = call(secured, signer.token(BASE + SERVICE), SERVICE, allowed)
    assert response.status_code == 200
    assert fhir.requests and all(r["headers"]["Authorization"] == f"Bearer {TOKEN}" for r in fhir.requests)


@pytest.mark.parametrize("weak_key,to_jwk,problem", [
    (lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024), jwt.algorithms.RSAAlgorithm.to_jwk,
     "an RSA key of 1024 bits (at least 2048 needed)"),
    (lambda: ec.generate_private_key(ec.SECP256R1()), jwt.algorithms.ECAlgorithm.to_jwk,
     "an EC key on secp256r1 (ES384 needs P-384)"),
], ids=["rsa-1024", "ec-p256"])
def test_a_weak_key_in_a_jwks_file_stops_the_app(make_app, tmp_path, weak_key, to_jwk, problem):
    from webhook.auth import AuthConfigError

    public = json.loads(to_jwk(weak_key().public_key()))
    (tmp_path / "weak.jwks.json").write_text(json.dumps({"keys": [{**public, "kid": "weak-1"}]}))
    (tmp_path / "auth.yaml").write_text(
        f"base_url: {BASE}\nissuers:\n  - iss: {ISSUER}\n    jwks_file: weak.jwks.json\n")
    with pytest.raises(AuthConfigError, match=re.escape(f"key 'weak-1' is refused: {problem}")):
        make_app(AUTH_CONFIG=str(tmp_path / "auth.yaml"))


def test_a_bad_auth_config_stops_the_app(make_app, tmp_path):
    from webhook.auth import AuthConfigError

    (tmp_path / "auth.yaml").write_text("base_url: http://x\nissuers:\n  - iss: a\n    jwks_url: http://insecure\n")
    with pytest.raises(AuthConfigError):
        make_app(AUTH_CONFIG=str(tmp_path / "auth.yaml"))
