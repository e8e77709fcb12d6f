"""Which host names the service answers to, and which browser requests may change something.

A page on any web site can make its visitor's browser talk to a server on loopback: by DNS rebinding (the page's
own name is made to resolve to 127.0.0.1, so its scripts may read our answers; the browser still sends
`Host: attacker.example`), or by a cross-site form or fetch POST. Without authentication nothing else stands in
the way, so:

- Host: only loopback names (localhost, 127.0.0.1, [::1], with any port), the names given with `--allowed-host`,
  and with authentication the host of the auth config's base_url. Without authentication every request is checked;
  with it, the workbench is (the service's tokens are bound to base_url already). Others get 421.
- Cross-site: a request with `Sec-Fetch-Site: cross-site`, or with an `Origin` whose host is not one of those names,
  was sent by another site's page; the workbench refuses such requests when they would change something, and so
  does feedback without authentication (403). A page on another port of an allowed host counts as ours: it is
  already on this machine, or on our site. A request with neither header does not come from a web page (an EHR's
  server, curl) and passes.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Flask, current_app, request

from webhook.outcome import HookError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_AUTHORITY = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::[0-9]{1,5})?")


def host_name(authority: str) -> str | None:
    """The name in `host[:port]`, in lower case and without IPv6 brackets; None if it is not one."""
    match = _AUTHORITY.fullmatch(authority)
    return match[1].strip("[]").lower() if match else None


@dataclass(frozen=True)
class Hosts:
    names: frozenset[str]

    @classmethod
    def allowing(cls, extra: Iterable[str] = (), base_url: str | None = None) -> Hosts:
        """Loopback, the extra names, and the host of base_url."""
        names = set(LOOPBACK_NAMES) | {name for name in map(host_name, extra) if name}
        base_host = urlsplit(base_url).hostname if base_url else None
        if base_host:
            names.add(base_host)
        return cls(frozenset(names))

    def allows_host(self, authority: str | None) -> bool:
        """A Host header on the list; a request without one (HTTP/1.0) is no browser's and passes."""
        return authority is None or host_name(authority) in self.names

    def allows_origin(self, origin: str) -> bool:
        """An Origin header (scheme://host[:port]) that names an allowed host."""
        try:
            authority = urlsplit(origin).netloc
        except ValueError:
            return False
        return bool(authority) and self.allows_host(authority)  # "null" and other opaque origins are refused


def wrong_host(hosts: Hosts) -> str | None:
    """Why this request's Host is not answered; None if it is."""
    authority = request.headers.get("Host")
    if hosts.allows_host(authority):
        return None
    return (f"This server does not answer to the host name '{authority[:100]}' (a protection against DNS "
            "rebinding): call it as localhost or 127.0.0.1, or allow the name with `cdsrules serve --allowed-host`.")


def cross_site(hosts: Hosts) -> str | None:
    """Why this request looks sent by another site's page through the user's browser; None if it does not."""
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        return "Refused: the browser says another site sent this request (Sec-Fetch-Site: cross-site)."
    origin = request.headers.get("Origin")
    if origin is not None and not hosts.allows_origin(origin):
        return f"Refused: requests from the origin '{origin[:100]}' may not change anything here."
    return None


def guard(app: Flask, hosts: Hosts) -> None:
    """Without authentication, answer only requests that name an allowed host."""
    app.extensions["cdsrules.hosts"] = hosts
    app.before_request(_check_host)


def _check_host() -> None:
    if request.blueprint == "workbench":
        return  # the workbench checks for itself and answers with a page
    problem = wrong_host(current_app.extensions["cdsrules.hosts"])
    if problem:
        raise HookError(421, problem, code="forbidden")
