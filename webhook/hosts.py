"""Which host names the service answers to.

A page on any web site can make its visitor's browser talk to a server on loopback by DNS rebinding: the page's
own name is made to resolve to 127.0.0.1, so its scripts may read our answers, but the browser still sends
`Host: attacker.example`. Without authentication nothing else stands in the way, so the service answers only
loopback names (localhost, 127.0.0.1, [::1], with any port), the names given with `--allowed-host`, and with
authentication the host of the auth config's base_url. Without authentication every request is checked; with it,
the workbench is (the service's tokens are bound to base_url already). Others get 421.
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
        if base_url and urlsplit(base_url).hostname:
            names.add(urlsplit(base_url).hostname)
        return cls(frozenset(names))

    def allows_host(self, authority: str | None) -> bool:
        """A Host header on the list; a request without one (HTTP/1.0) is no browser's and passes."""
        return authority is None or host_name(authority) in self.names


def wrong_host(hosts: Hosts) -> str | None:
    """Why this request's Host is not answered; None if it is."""
    authority = request.headers.get("Host")
    if hosts.allows_host(authority):
        return None
    return (f"This server does not answer to the host name '{authority[:100]}' (a protection against DNS "
            "rebinding): call it as localhost or 127.0.0.1, or allow the name with `cdsrules serve --allowed-host`.")


def guard(app: Flask, hosts: Hosts) -> None:
    """Without authentication, answer only requests that name an allowed host."""
    app.extensions["cdsrules.hosts.guard"] = hosts
    app.before_request(_check_host)


def _check_host() -> None:
    if request.blueprint == "workbench":
        return  # the workbench checks for itself and answers with a page
    problem = wrong_host(current_app.extensions["cdsrules.hosts.guard"])
    if problem:
        raise HookError(421, problem, code="forbidden")
