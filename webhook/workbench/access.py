"""Who may open the workbench. It shows patient data (audit, feedback), so it has its own credential.

Without authentication (`--no-auth`, development) it answers loopback callers only. With authentication on, the
auth config's `workbench:` section names the credential: `token_sha256` (the sha256 of a token, sent as
`Authorization: Bearer <token>` or entered once in the login form, which sets a signed cookie) and/or
`trusted_header` (a header such as X-Forwarded-User set by a reverse proxy that has authenticated the user; believed
only from `trusted_proxies`, default loopback). With authentication on and no `workbench:` section, the workbench
refuses to start rather than open without a credential.

Login cookies are signed with the secret in `session_secret_file` (required with `token_sha256`), never with
anything the config itself holds: whoever reads the config must not be able to mint a session. The secret is a file
the operator provides, rather than one drawn at start (which would differ between gunicorn workers and instances)
or kept in the store (where every reader of the audit database, its backups and replicas would hold it too): one
file, mounted beside the JWKS, serves every worker of every instance. Replacing it logs everybody out.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from flask import Response, redirect, request, url_for
from werkzeug.exceptions import TooManyRequests

from webhook.hosts import Hosts
from webhook.workbench.throttle import Throttle

COOKIE = "cdsrules_workbench"
COOKIE_SECONDS = 8 * 3600  # the session length: no cookie is valid for longer
CLOCK_SKEW_SECONDS = 60  # a cookie issued by another instance whose clock runs a little ahead
MIN_SECRET_BYTES = 32
LOOPBACK = ("127.0.0.1", "::1")
_COOKIE_FORMAT = re.compile(r"([0-9]{1,12})\.([0-9]{1,12})\.([0-9a-f]{64})")


class WorkbenchConfigError(ValueError):
    """The workbench cannot be opened safely with this configuration."""


@dataclass(frozen=True)
class AccessPolicy:
    open_on_loopback: bool  # no authentication configured: loopback callers only
    hosts: Hosts  # the Host names answered (DNS rebinding)
    token_sha256: str | None = None
    trusted_header: str | None = None
    trusted_proxies: tuple[str, ...] = LOOPBACK
    session_secret: bytes | None = field(default=None, repr=False)  # signs login cookies

    @property
    def has_token(self) -> bool:
        return self.token_sha256 is not None


def policy_from(auth_config: str | None, allowed_hosts: Iterable[str] = ()) -> AccessPolicy:
    """The policy for a server's auth config path (None: authentication off) and its extra host names."""
    if not auth_config:
        return AccessPolicy(open_on_loopback=True, hosts=Hosts.allowing(allowed_hosts))
    try:
        config = yaml.safe_load(Path(auth_config).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise WorkbenchConfigError(f"{auth_config}: cannot read the auth config: {error}") from None
    section = config.get("workbench") if isinstance(config, dict) else None
    if not isinstance(section, dict):
        raise WorkbenchConfigError(f"{auth_config}: --workbench with authentication needs a 'workbench:' section "
                                   "with token_sha256 and/or trusted_header")
    base_url = config.get("base_url")
    hosts = Hosts.allowing(allowed_hosts, base_url if isinstance(base_url, str) else None)
    return _policy(auth_config, section, hosts)


def _policy(source: str, section: dict, hosts: Hosts) -> AccessPolicy:
    """Checked here as well as by the schema: the workbench can be mounted on an app without the JWT layer."""
    token = section.get("token_sha256")
    header = section.get("trusted_header")
    proxies = section.get("trusted_proxies", list(LOOPBACK))
    if token is not None and (not isinstance(token, str) or len(token) != 64
                              or any(c not in "0123456789abcdef" for c in token.lower())):
        raise WorkbenchConfigError(f"{source}: workbench.token_sha256 must be 64 hexadecimal digits")
    if header is not None and (not isinstance(header, str) or not header.strip()):
        raise WorkbenchConfigError(f"{source}: workbench.trusted_header must be a header name")
    if token is None and header is None:
        raise WorkbenchConfigError(f"{source}: workbench needs token_sha256 or trusted_header")
    if not isinstance(proxies, list) or not all(_is_address(p) for p in proxies):
        raise WorkbenchConfigError(f"{source}: workbench.trusted_proxies must be a list of IP addresses")
    secret = _session_secret(source, section.get("session_secret_file")) if token is not None else None
    return AccessPolicy(False, hosts, token.lower() if token else None, header, tuple(proxies), secret)


def _session_secret(source: str, name: object) -> bytes:
    """The cookie signing key from its file (relative to the auth config); at least 32 bytes."""
    if not isinstance(name, str) or not name:
        raise WorkbenchConfigError(f"{source}: workbench.token_sha256 needs workbench.session_secret_file, a file "
                                   "holding the secret that signs login cookies (e.g. `openssl rand -hex 32 > FILE`)")
    path = Path(source).resolve().parent / name
    try:
        secret = path.read_bytes().strip()
    except OSError as error:
        raise WorkbenchConfigError(f"{source}: workbench.session_secret_file: cannot read {path}: {error}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise WorkbenchConfigError(f"{source}: workbench.session_secret_file: {path} holds {len(secret)} bytes; "
                                   f"at least {MIN_SECRET_BYTES} are needed (e.g. `openssl rand -hex 32 > FILE`)")
    return secret


def _is_address(value: object) -> bool:
    try:
        ipaddress.ip_address(str(value))
        return True
    except ValueError:
        return False


# --- checking a request -------------------------------------------------------------------------


def who(policy: AccessPolicy, throttle: Throttle) -> str | None:
    """Who is asking, if they may: a user name, 'token' or 'loopback'; None if not allowed."""
    if policy.open_on_loopback:
        return "loopback" if _is_loopback(request.remote_addr) else None
    if policy.trusted_header and request.remote_addr in policy.trusted_proxies:
        user = (request.headers.get(policy.trusted_header) or "").strip()
        if user:
            return user
    if policy.has_token:
        bearer = _bearer(request.headers.get("Authorization"))
        if bearer is not None and token_accepted(policy, throttle, bearer):
            return "token"
        if cookie_valid(policy, request.cookies.get(COOKIE)):
            return "token"
    return None


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _bearer(header: str | None) -> str | None:
    scheme, _, token = (header or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def token_accepted(policy: AccessPolicy, throttle: Throttle, token: str | None) -> bool:
    """Whether this is the workbench token; a 429 while the caller's address waits after wrong ones."""
    address = request.remote_addr or "unknown"
    wait = throttle.wait_seconds(address)
    if wait > 0:
        raise TooManyRequests("Too many wrong workbench tokens from this address; try again later.",
                              retry_after=math.ceil(wait))
    if token_matches(policy, token):
        throttle.succeeded(address)
        return True
    throttle.failed(address)
    return False


def token_matches(policy: AccessPolicy, token: str | None) -> bool:
    if not token or not policy.token_sha256:
        return False
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
    return hmac.compare_digest(digest, policy.token_sha256)


def _signature(policy: AccessPolicy, issued: int, expires: int) -> str:
    """Signed with the server secret; the token's hash is signed too, so changing the token logs everybody out."""
    message = f"workbench-session:{issued}:{expires}:{policy.token_sha256}".encode()
    return hmac.new(policy.session_secret, message, "sha256").hexdigest()


def cookie_value(policy: AccessPolicy, now: float | None = None) -> str:
    """A new session's cookie, valid for one session length."""
    issued = int(now if now is not None else time.time())
    return session_cookie(policy, issued, issued + COOKIE_SECONDS)


def session_cookie(policy: AccessPolicy, issued: int, expires: int) -> str:
    """`issued.expires.signature`, in whole seconds since the epoch."""
    return f"{issued}.{expires}.{_signature(policy, issued, expires)}"


def cookie_valid(policy: AccessPolicy, value: str | None, now: float | None = None) -> bool:
    """Signed with our secret, issued by now, not expired, and never longer than one session."""
    match = _COOKIE_FORMAT.fullmatch(value or "")
    if match is None or not policy.token_sha256 or not policy.session_secret:
        return False
    issued, expires = int(match[1]), int(match[2])
    now = now if now is not None else time.time()
    if issued > now + CLOCK_SKEW_SECONDS or expires <= now or expires - issued > COOKIE_SECONDS:
        return False
    return hmac.compare_digest(match[3], _signature(policy, issued, expires))


def refuse(policy: AccessPolicy) -> Response:
    """A page asking for the credential (or saying why there is none to give)."""
    from flask import render_template

    if policy.open_on_loopback:
        return Response(render_template("refused.html", reason="The workbench is served to this machine only "
                                        "(authentication is off)."), status=403)
    if policy.has_token and request.method == "GET" and "text/html" in request.headers.get("Accept", ""):
        return redirect(url_for("workbench.login", next=request.full_path.rstrip("?")))
    response = Response(render_template("refused.html", reason="The workbench needs its own credential."),
                        status=401)
    if policy.has_token:
        response.headers["WWW-Authenticate"] = 'Bearer realm="workbench"'
    return response


def safe_next(target: str | None) -> str:
    """Only a path inside the workbench, never another site (no open redirect) nor a header break (CR/LF)."""
    if (target and target.startswith("/workbench/") and not target.startswith("//") and "\\" not in target
            and target.isprintable()):
        return target
    return url_for("workbench.rulesets")
