"""JWT verification of CDS clients, as CDS Hooks 2.0 asks.

Each allowlisted issuer has its JWKS (a file, or a URL fetched and cached) and optionally the tenants and the
fhirServer URLs it may name. A token passes when: the algorithm is ES384 or RS384 (our allowlist, never the
token's choice), the signature verifies with the issuer's key named by `kid` (RSA keys of at least 2048 bits, EC
keys on P-384: weaker keys are refused when the JWKS is read), `aud` is our configured base URL plus the path
called, `exp`/`nbf`/`iat` are JSON numbers and hold within 60 s, `exp - iat` is at most the maximum lifetime, and
the `jti` was not seen before (kept in the store until the token expires, so the check holds across worker
processes). Any failure is a 401 with no detail; the log says why (never the token itself).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import jwt
import yaml
from flask import Flask, current_app, g, request
from sqlalchemy.exc import SQLAlchemyError

import schemas
from store import Store
from webhook.outcome import HookError, unauthorized

log = logging.getLogger(__name__)

ALGORITHMS = {"ES384": "EC", "RS384": "RSA"}  # allowed algorithm -> the key type it needs
LEEWAY_SECONDS = 60
REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "jti"]
TIME_CLAIMS = ("exp", "iat", "nbf")
MIN_RSA_BITS = 2048  # NIST SP 800-131A; also the floor of PyJWT's enforce_minimum_key_length
ES384_CURVE = "secp384r1"  # P-384: ES384 is ECDSA on this curve only (RFC 7518, section 3.4)
# CDS Hooks 2.0, "Trusting CDS Clients", makes exp and iat REQUIRED numbers of seconds since the Epoch but bounds
# exp - iat nowhere (its own example token is valid for over three years). The default bound is the one SMART
# Backend Services sets on its authentication JWTs, exp "no more than five minutes in the future"; the auth
# config's max_token_lifetime_seconds changes it.
DEFAULT_MAX_LIFETIME_SECONDS = 300
# Health checks, metrics and the API description need no token (keep /metrics off the public network);
# the workbench has its own credential (webhook/workbench).
PUBLIC_BLUEPRINTS = {"health", "openapi", "metrics", "workbench"}
# Keys from a JWKS URL, per URL and worker process (RemoteJwks):
JWKS_FETCH_TIMEOUT_SECONDS = 2  # per connect and per read
JWKS_REFRESH_SECONDS = 300  # keys older than this are fetched again: rotated and withdrawn keys are seen
JWKS_MIN_INTERVAL_SECONDS = 30  # never two fetches closer than this, whatever kids tokens name
JWKS_MAX_BACKOFF_SECONDS = 300  # after failed fetches in a row the interval doubles up to this
SCHEMA_FILE = "auth-config.schema.json"


class AuthConfigError(ValueError):
    """The auth configuration file is missing or invalid."""


class TokenRefused(Exception):
    """Why a token is refused: for the log, never for the caller."""


@dataclass(frozen=True)
class Issuer:
    iss: str
    key_for: Callable[[str, str | None], Any]  # (kid, jku) -> PyJWK; raises on an unknown kid or jku
    tenants: frozenset[str] | None
    fhir_servers: tuple[str, ...]

    def allows_fhir_server(self, url: str) -> bool:
        return url.rstrip("/") in {u.rstrip("/") for u in self.fhir_servers}


class Authenticator:
    def __init__(self, base_url: str, issuers: dict[str, Issuer], store: Store,
                 max_lifetime: int = DEFAULT_MAX_LIFETIME_SECONDS):
        self.base_url = base_url.rstrip("/")
        self.issuers = issuers
        self.store = store
        self.max_lifetime = max_lifetime

    def verify(self, authorization: str | None, path: str) -> Issuer:
        """The issuer of a valid bearer token for `path`, or a 401 HookError."""
        token = _bearer_token(authorization)
        try:
            issuer, claims = self._decode(token, self.base_url + path)
        except (TokenRefused, jwt.PyJWTError, KeyError, ValueError, TypeError) as error:
            log.info("JWT refused for %s: %s: %s", path, type(error).__name__, error)
            raise unauthorized() from None
        if issuer.tenants is not None and claims.get("tenant") not in issuer.tenants:
            log.info("JWT refused for %s: tenant not allowed for issuer %s", path, issuer.iss)
            raise unauthorized()
        self._check_replay(issuer, claims, path)
        return issuer

    def _decode(self, token: str, audience: str) -> tuple[Issuer, dict]:
        header = jwt.get_unverified_header(token)
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALGORITHMS:
            raise TokenRefused(f"algorithm {algorithm!r} not allowed")
        if not isinstance(kid, str):
            raise TokenRefused("no kid in the header")
        iss = jwt.decode(token, options={"verify_signature": False}).get("iss")
        issuer = self.issuers.get(iss)
        if issuer is None:
            raise TokenRefused(f"issuer {iss!r} not trusted")
        key = issuer.key_for(kid, header.get("jku"))
        if key.key_type != ALGORITHMS[algorithm]:
            raise TokenRefused(f"a {key.key_type} key cannot verify {algorithm}")
        claims = jwt.decode(
            token,
            key.key,
            algorithms=[algorithm],
            audience=audience,
            issuer=issuer.iss,
            leeway=LEEWAY_SECONDS,
            options={"require": REQUIRED_CLAIMS, "enforce_minimum_key_length": True},
        )
        _check_times(claims, self.max_lifetime)
        return issuer, claims

    def _check_replay(self, issuer: Issuer, claims: dict, path: str) -> None:
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            log.info("JWT refused for %s: jti is not a non-empty string", path)
            raise unauthorized()
        try:
            fresh = self.store.remember_jti(issuer.iss, jti, int(claims["exp"]) + LEEWAY_SECONDS)
        except SQLAlchemyError:
            log.error("JWT replay check impossible: the store is unavailable")
            raise HookError(503, "The service cannot check tokens right now.") from None
        if not fresh:
            log.info("JWT refused for %s: jti replayed (issuer %s)", path, issuer.iss)
            raise unauthorized()


def _check_times(claims: dict, max_lifetime: int) -> None:
    """exp, iat and nbf must be JSON numbers (PyJWT alone also takes a string such as "1700000000", or true), and
    the token may live at most max_lifetime seconds from iat to exp."""
    for name in TIME_CLAIMS:
        if name in claims and type(claims[name]) not in (int, float):
            raise TokenRefused(f"{name} is not a JSON number: {claims[name]!r}")
    lifetime = claims["exp"] - claims["iat"]
    if not 0 < lifetime <= max_lifetime:
        raise TokenRefused(f"lifetime exp - iat of {lifetime} s is not within 1..{max_lifetime} s")


def _bearer_token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized()
    return token.strip()


# --- configuration ----------------------------------------------------------------------


@cache
def _schema() -> dict:
    return schemas.load(SCHEMA_FILE)


def read_config(path: str) -> dict:
    """The auth config as data, checked against schemas/auth-config.schema.json."""
    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise AuthConfigError(f"{path}: cannot read the auth config: {error}") from None
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(_schema()).iter_errors(config))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise AuthConfigError(f"{path}: {where}: {error.message}")
    return config


def check_config(path: str) -> None:
    """Raise AuthConfigError for what would stop every worker: the config itself, a JWKS file or a key in it."""
    _issuers(read_config(path), Path(path).resolve().parent)


def load_authenticator(path: str, store: Store) -> Authenticator:
    config = read_config(path)
    issuers = _issuers(config, Path(path).resolve().parent)
    max_lifetime = config.get("max_token_lifetime_seconds", DEFAULT_MAX_LIFETIME_SECONDS)
    return Authenticator(config["base_url"], issuers, store, max_lifetime)


def _issuers(config: dict, base: Path) -> dict[str, Issuer]:
    issuers = {}
    for entry in config["issuers"]:
        tenants = entry.get("tenants")
        issuers[entry["iss"]] = Issuer(
            iss=entry["iss"],
            key_for=_key_source(entry, base),
            tenants=frozenset(tenants) if tenants is not None else None,
            fhir_servers=tuple(entry.get("fhir_servers", ())),
        )
    return issuers


def _key_source(entry: dict, base: Path) -> Callable[[str, str | None], Any]:
    """Keys by kid from the issuer's JWKS; a token's `jku` is used only when it is on the issuer's allowlist."""
    allowed_jku = {url: RemoteJwks(url) for url in entry.get("jku_allowlist", ())}
    if "jwks_url" in entry:
        configured = RemoteJwks(entry["jwks_url"]).key
    else:
        configured = _file_keys(base / entry["jwks_file"])

    def key_for(kid: str, jku: str | None) -> Any:
        if jku is None:
            return configured(kid)
        if jku not in allowed_jku:
            raise TokenRefused(f"jku {jku!r} not on the allowlist")
        return allowed_jku[jku].key(kid)

    return key_for


def _file_keys(path: Path) -> Callable[[str], Any]:
    """The keys of a jwks_file by kid; a weak one is an error at start."""
    try:
        keys = jwt.PyJWKSet.from_json(path.read_text(encoding="utf-8"))
    except (OSError, jwt.PyJWTError, ValueError) as error:
        raise AuthConfigError(f"{path}: not a usable JWKS: {error}") from None
    for key in keys.keys:
        if problem := key_problem(key):
            raise AuthConfigError(f"{path}: key {key.key_id!r} is refused: {problem}")

    def key(kid: str) -> Any:
        try:
            return keys[kid]
        except KeyError:
            raise TokenRefused(f"kid {kid!r} not in {path.name}") from None

    return key


def key_problem(key: jwt.PyJWK) -> str | None:
    """Why a key is too weak to verify our tokens, or None."""
    if key.key_type == "RSA" and key.key.key_size < MIN_RSA_BITS:
        return f"an RSA key of {key.key.key_size} bits (at least {MIN_RSA_BITS} needed)"
    if key.key_type == "EC" and key.key.curve.name != ES384_CURVE:
        return f"an EC key on {key.key.curve.name} (ES384 needs P-384)"
    return None


class RemoteJwks:
    """The keys at a JWKS URL, fetched by PyJWKClient (a short timeout, no redirects) and cached here, because
    PyJWKClient's own cache neither backs off after a failed fetch nor answers a cached key while it fetches.

    A kid not in the cache, or keys older than JWKS_REFRESH_SECONDS, make a fetch, but never within
    JWKS_MIN_INTERVAL_SECONDS of the last one (longer after failures): made-up kids or a failing endpoint cannot
    make us fetch more often, and the last good keys stay in use. The lock is this URL's alone, is not taken for a
    cached key, and is waited for at most JWKS_FETCH_TIMEOUT_SECONDS: a slow endpoint delays no other issuer.
    """

    def __init__(self, url: str):
        self.url = url
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=JWKS_FETCH_TIMEOUT_SECONDS)
        self._keys: dict[str, Any] = {}  # kid -> PyJWK, replaced whole by each good fetch
        self._fetched_at = -math.inf  # time.monotonic() of the last good fetch
        self._next_fetch_at = -math.inf
        self._failures = 0  # failed fetches in a row
        self._lock = threading.Lock()

    def key(self, kid: str) -> Any:
        if (kid not in self._keys or self._stale()) and self._lock.acquire(timeout=JWKS_FETCH_TIMEOUT_SECONDS):
            try:
                self._fetch_if_allowed()
            finally:
                self._lock.release()
        try:
            return self._keys[kid]
        except KeyError:
            raise TokenRefused(f"kid {kid!r} not in the JWKS at {self.url}") from None

    def _strong_signing_keys(self, keys: list[jwt.PyJWK]) -> dict[str, Any]:
        usable = {}
        for key in keys:
            if not key.key_id or key.public_key_use not in ("sig", None):
                continue
            if problem := key_problem(key):
                log.warning("JWKS at %s: key %r left out: %s", self.url, key.key_id, problem)
            else:
                usable[key.key_id] = key
        return usable

    def _stale(self) -> bool:
        return time.monotonic() - self._fetched_at >= JWKS_REFRESH_SECONDS

    def _fetch_if_allowed(self) -> None:
        if time.monotonic() < self._next_fetch_at:
            return
        try:
            keys = self._client.get_jwk_set(refresh=True).keys
        except (jwt.PyJWTError, OSError, ValueError) as error:  # unreachable, an HTTP error, not a JWKS
            self._failures += 1
            wait = backoff_seconds(self._failures)
            self._next_fetch_at = time.monotonic() + wait
            log.warning("JWKS fetch from %s failed (%s); no new try for %d s", self.url, error, wait)
            return
        self._keys = self._strong_signing_keys(keys)
        self._failures = 0
        self._fetched_at = time.monotonic()
        self._next_fetch_at = self._fetched_at + JWKS_MIN_INTERVAL_SECONDS


def backoff_seconds(failures: int) -> float:
    """The wait for the next fetch after `failures` failed ones in a row: the minimum interval, doubling."""
    return min(JWKS_MIN_INTERVAL_SECONDS * 2 ** (failures - 1), JWKS_MAX_BACKOFF_SECONDS)


# --- wiring -------------------------------------------------------------------------------


def init_app(app: Flask, authenticator: Authenticator | None) -> None:
    """Require a valid token on every call except CORS preflight and health checks."""
    app.extensions["cdsrules.auth"] = authenticator
    if authenticator is not None:
        app.before_request(_require_token)


def _require_token() -> None:
    if request.method == "OPTIONS" or request.blueprint in PUBLIC_BLUEPRINTS:
        return
    authenticator: Authenticator = current_app.extensions["cdsrules.auth"]
    g.issuer = authenticator.verify(request.headers.get("Authorization"), request.path)


def current_issuer() -> Issuer | None:
    """The issuer that authenticated this request; None when authentication is off."""
    return g.get("issuer")
