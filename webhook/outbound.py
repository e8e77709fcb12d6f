"""Outbound HTTP for FHIR fallback reads: never to an address no FHIR server may have, checked as it connects.

A call's fhirServer is checked when the call is accepted (`webhook.prefetch.is_safe_fetch_target`), but a name
can resolve to an allowed address then and to a cloud metadata address a moment later, when the fetch connects
(DNS rebinding). So the connection resolves the name once itself, refuses it if any of its addresses is blocked,
and connects to those checked addresses, never by name again. TLS still verifies the certificate against the name.

Through a proxy taken from the environment (HTTPS_PROXY), the proxy makes the connection and only the URL check
applies.
"""
from __future__ import annotations

import ipaddress
import socket

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import create_connection


class BlockedAddress(OSError):
    """A host that is, or resolves to, an address no FHIR server may have."""


def is_blocked_address(address: str) -> bool:
    """Link-local (where cloud metadata services live), multicast, unspecified or reserved. Loopback and private
    ranges stay possible: a hospital's FHIR server may be there, and the per-issuer allowlist limits them."""
    ip = ipaddress.ip_address(address.split("%")[0])
    return ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved


def checked_addresses(host: str, port: int | None = None) -> list[str]:
    """The addresses `host` resolves to, in resolver order; BlockedAddress if any one of them is blocked (a name
    with one bad address is not trusted with the others). socket.gaierror if it does not resolve."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        if is_blocked_address(address):
            raise BlockedAddress(f"{host} resolves to {address}, an address no FHIR server may have")
    return addresses


def session() -> requests.Session:
    """A requests session whose connections go only to checked addresses."""
    checked = requests.Session()
    adapter = _CheckedAdapter()
    checked.mount("http://", adapter)
    checked.mount("https://", adapter)
    return checked


class _ConnectsToCheckedAddresses:
    """Replaces urllib3's `_new_conn` (resolve and connect by name) with: resolve, check, connect by address."""

    def _new_conn(self) -> socket.socket:
        try:
            addresses = checked_addresses(self.host, self.port)
        except socket.gaierror as error:
            raise NameResolutionError(self.host, self, error) from error
        except BlockedAddress as error:
            raise NewConnectionError(self, f"refused: {error}") from None
        failure: Exception | None = None
        for address in addresses:  # as urllib3 does: the next address if one cannot be reached
            try:
                return create_connection((address, self.port), self.timeout, source_address=self.source_address,
                                         socket_options=self.socket_options)
            except TimeoutError:
                failure = ConnectTimeoutError(self, f"Connection to {self.host} timed out "
                                                    f"(connect timeout={self.timeout})")
            except OSError as error:
                failure = NewConnectionError(self, f"Failed to establish a new connection: {error}")
        raise failure or NewConnectionError(self, f"{self.host} has no address")


class _CheckedHTTPConnection(_ConnectsToCheckedAddresses, HTTPConnection):
    pass


class _CheckedHTTPSConnection(_ConnectsToCheckedAddresses, HTTPSConnection):
    pass


class _CheckedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class _CheckedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _CheckedHTTPPool, "https": _CheckedHTTPSPool}
