"""Who may open the workbench. It shows patient data (audit, feedback), so it has its own credential.

Without authentication (`--no-auth`, development) it answers loopback callers only. With authentication on, the
auth config's `workbench:` section names the credential: `token_sha256` (the sha256 of a token, sent as
`Authorization: Bearer <token>` or entered once in the login form, which sets a signed cookie) and/or
`trusted_header` (a header such as X-Forwarded-User set by a reverse proxy that has authenticated the user; believed
only from `trusted_proxies`, default loopback). With authentication on and no `workbench:` section, the workbench
refuses to start rather than open without a credential.

Identities, for the four-eyes release of a ruleset version: `users` gives each person a token of their own
(`{name, token_sha256, roles}`; the login cookie then names the user, signed with their token's hash), and
`trusted_header_roles` maps the names the proxy sends to their roles. Roles are `author` (may propose a release)
and `approver` (may approve or reject one). The shared `token_sha256` and the loopback of `--no-auth` name nobody:
they may look, never propose or approve. `current_user()` is who is asking, for the pages that need to know.

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from flask import Response, g, has_request_context, redirect, request, url_for
from werkzeug.exceptions import TooManyRequests

from webhook.hosts import Hosts
from webhook.workbench.throttle import Throttle

COOKIE = "cdsrules_workbench"
COOKIE_SECONDS = 8 * 3600  # the session length: no cookie is valid for longer
CLOCK_SKEW_SECONDS = 60  # a cookie issued by another instance whose clock runs a little ahead
MIN_SECRET_BYTES = 32
LOOPBACK = ("127.0.0.1", "::1")
# issued.expires[.user name as UTF-8 hex].signature: the name in hex needs no escaping, whatever it holds
_COOKIE_FORMAT = re.compile(r"([0-9]{1,12})\.([0-9]{1,12})\.(?:([0-9a-f]{2,1600})\.)?([0-9a-f]{64})")
AUTHOR, APPROVER = "author", "approver"
ROLES = (AUTHOR, APPROVER)
MAX_NAME = 200  # a user's name is stored with what they propose and approve (store/tables.py: String(200))


class WorkbenchConfigError(ValueError):
    """The workbench cannot be opened safely with this configuration."""


@dataclass(frozen=True)
class User:
    """A person the workbench knows by name, and what they may do."""

    name: str
    roles: frozenset[str] = frozenset()

    def may(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class UserToken:
    """A user's own workbench token, stored as its sha256."""

    user: User
    token_sha256: str


@dataclass(frozen=True)
class Caller:
    """Who is asking: the name shown in the page, and the user, when the credential names one."""

    shown: str  # a user name, 'token' (the shared token) or 'loopback'
    user: User | None = None


@dataclass(frozen=True)
class AccessPolicy:
    open_on_loopback: bool  # no authentication configured: loopback callers only
    hosts: Hosts  # the Host names answered (DNS rebinding)
    token_sha256: str | None = None
    trusted_header: str | None = None
    trusted_proxies: tuple[str, ...] = LOOPBACK
    session_secret: bytes | None = field(default=None, repr=False)  # signs login cookies
    users: tuple[UserToken, ...] = ()
    header_roles: Mapping[str, frozenset[str]] = field(default_factory=dict)  # trusted_header user -> roles

    @property
    def has_token(self) -> bool:
        return self.token_sha256 is not None or bool(self.users)


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
    users = _users(source, section.get("users", []), token)
    if token is None and header is None and not users:
        raise WorkbenchConfigError(f"{source}: workbench needs token_sha256, users or trusted_header")
    if not isinstance(proxies, list) or not all(_is_address(p) for p in proxies):
        raise WorkbenchConfigError(f"{source}: workbench.trusted_proxies must be a list of IP addresses")
    header_roles = _header_roles(source, section.get("trusted_header_roles", {}))
    if header_roles and header is None:
        raise WorkbenchConfigError(f"{source}: workbench.trusted_header_roles needs workbench.trusted_header")
    needs_secret = token is not None or bool(users)
    secret = _session_secret(source, section.get("session_secret_file")) if needs_secret else None
    return AccessPolicy(False, hosts, token.lower() if token else None, header, tuple(proxies), secret, users,
                        header_roles)


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower())


def _users(source: str, entries: object, shared: str | None) -> tuple[UserToken, ...]:
    """`users: [{name, token_sha256, roles}]`: each name and each token once, the shared token's too."""
    if not isinstance(entries, list):
        raise WorkbenchConfigError(f"{source}: workbench.users must be a list of {{name, token_sha256, roles}}")
    found: list[UserToken] = []
    digests = {shared.lower()} if isinstance(shared, str) else set()
    for index, entry in enumerate(entries):
        where = f"{source}: workbench.users[{index}]"
        if not isinstance(entry, dict):
            raise WorkbenchConfigError(f"{where} must be a mapping with name, token_sha256 and roles")
        name = _user_name(where, entry.get("name"))
        if not _is_sha256(entry.get("token_sha256")):
            raise WorkbenchConfigError(f"{where}.token_sha256 must be 64 hexadecimal digits")
        digest = str(entry["token_sha256"]).lower()
        if name in {u.user.name for u in found}:
            raise WorkbenchConfigError(f"{where}: the user {name} is named twice")
        if digest in digests:
            raise WorkbenchConfigError(f"{where}: this token_sha256 is another credential's too; each user needs "
                                       "a token of their own")
        digests.add(digest)
        found.append(UserToken(User(name, _roles(where, entry.get("roles", []))), digest))
    return tuple(found)


def _header_roles(source: str, entries: object) -> dict[str, frozenset[str]]:
    if not isinstance(entries, dict):
        raise WorkbenchConfigError(f"{source}: workbench.trusted_header_roles must map user names to roles")
    where = f"{source}: workbench.trusted_header_roles"
    return {_user_name(where, name): _roles(f"{where}.{name}", roles) for name, roles in entries.items()}


def _user_name(where: str, name: object) -> str:
    if not isinstance(name, str) or not name.strip() or name != name.strip() or len(name) > MAX_NAME:
        raise WorkbenchConfigError(f"{where}: a user name is 1 to {MAX_NAME} characters without surrounding spaces")
    return name


def _roles(where: str, roles: object) -> frozenset[str]:
    if not isinstance(roles, list) or any(r not in ROLES for r in roles):
        raise WorkbenchConfigError(f"{where}: roles must be a list of {', '.join(ROLES)}")
    return frozenset(roles)


def _session_secret(source: str, name: object) -> bytes:
    """The cookie signing key from its file (relative to the auth config); at least 32 bytes."""
    if not isinstance(name, str) or not name:
        raise WorkbenchConfigError(f"{source}: workbench.token_sha256 and workbench.users need "
                                   "workbench.session_secret_file, a file "
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
    caller = identify(policy, throttle)
    return caller.shown if caller else None


def identify(policy: AccessPolicy, throttle: Throttle) -> Caller | None:
    """Who is asking, if they may, and the user their credential names (none for the shared token or loopback)."""
    if policy.open_on_loopback:
        return Caller("loopback") if _is_loopback(request.remote_addr) else None
    if policy.trusted_header and request.remote_addr in policy.trusted_proxies:
        name = (request.headers.get(policy.trusted_header) or "").strip()
        if name:
            return Caller(name, User(name, policy.header_roles.get(name, frozenset())))
    if policy.has_token:
        bearer = _bearer(request.headers.get("Authorization"))
        if bearer is not None:
            owner = token_owner(policy, throttle, bearer)
            if owner is not None:
                return owner
        return cookie_caller(policy, request.cookies.get(COOKIE))
    return None


def current_user() -> User | None:
    """The user asking in this request (name and roles); None for the shared token, loopback or no request."""
    return g.get("workbench_identity") if has_request_context() else None


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _bearer(header: str | None) -> str | None:
    scheme, _, token = (header or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def token_accepted(policy: AccessPolicy, throttle: Throttle, token: str | None) -> bool:
    """Whether this is a workbench token; a 429 while the caller's address waits after wrong ones."""
    return token_owner(policy, throttle, token) is not None


def token_owner(policy: AccessPolicy, throttle: Throttle, token: str | None) -> Caller | None:
    """Whose token this is (a user's, or the shared one), if any; a 429 while the address waits after wrong ones."""
    address = request.remote_addr or "unknown"
    wait = throttle.wait_seconds(address)
    if wait > 0:
        raise TooManyRequests("Too many wrong workbench tokens from this address; try again later.",
                              retry_after=math.ceil(wait))
    owner = _owner(policy, token)
    if owner is not None:
        throttle.succeeded(address)
        return owner
    throttle.failed(address)
    return None


def token_matches(policy: AccessPolicy, token: str | None) -> bool:
    return _owner(policy, token) is not None


def _owner(policy: AccessPolicy, token: str | None) -> Caller | None:
    """Every credential is compared (in constant time), so how long it takes says nothing of whose it is."""
    if not token:
        return None
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
    found = None
    if policy.token_sha256 and hmac.compare_digest(digest, policy.token_sha256):
        found = Caller("token")
    for entry in policy.users:
        if hmac.compare_digest(digest, entry.token_sha256):
            found = Caller(entry.user.name, entry.user)
    return found


def _signature(policy: AccessPolicy, issued: int, expires: int, user: UserToken | None = None) -> str:
    """Signed with the server secret; the token's hash is signed too, so changing a token logs out whoever used
    it (everybody, for the shared one)."""
    if user is None:
        message = f"workbench-session:{issued}:{expires}:{policy.token_sha256}".encode()
    else:
        message = f"workbench-user-session:{issued}:{expires}:{_hex(user.user.name)}:{user.token_sha256}".encode()
    assert policy.session_secret is not None
    return hmac.new(policy.session_secret, message, "sha256").hexdigest()


def _hex(name: str) -> str:
    return name.encode("utf-8").hex()


def cookie_value(policy: AccessPolicy, now: float | None = None, user: str | None = None) -> str:
    """A new session's cookie, valid for one session length; naming `user` when their own token logged in."""
    issued = int(now if now is not None else time.time())
    return session_cookie(policy, issued, issued + COOKIE_SECONDS, user)


def session_cookie(policy: AccessPolicy, issued: int, expires: int, user: str | None = None) -> str:
    """`issued.expires.signature` (`issued.expires.<user name in hex>.signature` for a user), in whole seconds since
    the epoch."""
    if user is None:
        return f"{issued}.{expires}.{_signature(policy, issued, expires)}"
    entry = next(u for u in policy.users if u.user.name == user)
    return f"{issued}.{expires}.{_hex(user)}.{_signature(policy, issued, expires, entry)}"


def cookie_valid(policy: AccessPolicy, value: str | None, now: float | None = None) -> bool:
    return cookie_caller(policy, value, now) is not None


def cookie_caller(policy: AccessPolicy, value: str | None, now: float | None = None) -> Caller | None:
    """Whose session this is, if it is signed with our secret, issued by now, not expired, and never longer than
    one session."""
    match = _COOKIE_FORMAT.fullmatch(value or "")
    if match is None or not policy.session_secret:
        return None
    issued, expires = int(match[1]), int(match[2])
    now = now if now is not None else time.time()
    if issued > now + CLOCK_SKEW_SECONDS or expires <= now or expires - issued > COOKIE_SECONDS:
        return None
    if match[3] is None:
        if policy.token_sha256 and hmac.compare_digest(match[4], _signature(policy, issued, expires)):
            return Caller("token")
        return None
    entry = next((u for u in policy.users if _hex(u.user.name) == match[3]), None)
    if entry is not None and hmac.compare_digest(match[4], _signature(policy, issued, expires, entry)):
        return Caller(entry.user.name, entry.user)
    return None


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
