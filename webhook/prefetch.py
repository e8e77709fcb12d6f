"""The data a service needs: prefetch first, then the client's FHIR server, else 412.

Each prefetch key arrives in one of five states: absent (the client chose not to fill it), `null` (the client has
no data), a resource or Bundle, an empty Bundle, or an OperationOutcome (the client hit an error). The last and
the first are not data: those keys are fetched from `fhirServer` with the client's bearer token, in parallel,
each with a hard timeout. Threads here only do HTTP; the engine is never called from them. The access token is
never logged and never put into an error message.
"""
from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import requests

from webhook import outbound
from webhook.outcome import precondition_failed
from webhook.request import HookRequest

ABSENT, NULL, DATA, EMPTY, ERROR = "absent", "null", "data", "empty", "error"
MAX_FHIR_RESPONSE_BYTES = 20 * 1024 * 1024
_TOKEN = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")
_USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


class FetchError(Exception):
    """A FHIR query that gave no usable answer; the message is safe to show (no token)."""


@dataclass
class Gathered:
    payloads: dict[str, object]  # prefetch key -> the payload used (resource, Bundle or None)
    supplied: set[str]  # resource types whose queries were all answered
    fetched: list[str] = field(default_factory=list)  # keys we fetched ourselves


def state(value: object, present: bool = True) -> str:
    """Which of the five prefetch states a value is in (anything unusable counts as an error)."""
    if not present:
        return ABSENT
    if value is None:
        return NULL
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        return ERROR
    if value["resourceType"] == "OperationOutcome":
        return ERROR
    if value["resourceType"] == "Bundle" and not value.get("entry"):
        return EMPTY
    return DATA


def resource_type(template: str) -> str:
    return re.split(r"[?/]", template, maxsplit=1)[0]


def fill(template: str, request: HookRequest) -> str | None:
    """The query with its tokens replaced, or None if a token has no value in this request."""
    missing = False

    def value(match: re.Match) -> str:
        nonlocal missing
        found = _token_value(match.group(1), request)
        if found is None:
            missing = True
            return ""
        return quote(found, safe="")

    query = _TOKEN.sub(value, template)
    return None if missing else query


def _token_value(token: str, request: HookRequest) -> str | None:
    if token == "context.patientId":
        return request.patient_id or None
    if token.startswith("context."):
        found = request.context.get(token.removeprefix("context."))
        return str(found) if isinstance(found, (str, int, float)) and not isinstance(found, bool) else None
    if token in _USER_TOKENS:
        kind, _, ident = str(request.context.get("userId", "")).partition("/")
        return ident if kind == _USER_TOKENS[token] and ident else None
    return None


class Fetcher:
    """FHIR reads for the fallback path: a small thread pool for the HTTP I/O only."""

    def __init__(self, timeout: float, max_workers: int = 4):
        self.timeout = timeout
        self.max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:  # created on first use, i.e. in the worker process, after gunicorn forked
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="fhir-fetch")
            return self._pool

    def fetch_all(self, base: str, queries: dict[str, str], token: str | None) -> dict[str, object]:
        """Every query at once; key -> payload, or key -> FetchError."""
        futures = {key: self._executor().submit(self.fetch, base, query, token) for key, query in queries.items()}
        wait(futures.values(), timeout=self.timeout + 1)
        results: dict[str, object] = {}
        for key, future in futures.items():
            if not future.done():
                future.cancel()
                results[key] = FetchError("timed out")
            else:
                error = future.exception()
                results[key] = error if error is not None else future.result()
        return results

    def fetch(self, base: str, query: str, token: str | None) -> object:
        headers = {"Accept": "application/fhir+json, application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = f"{base.rstrip('/')}/{query.lstrip('/')}"
        try:
            with outbound.session() as session, session.get(url, headers=headers, timeout=self.timeout,
                                                             stream=True, allow_redirects=False) as response:
                if response.status_code != 200:
                    raise FetchError(f"HTTP {response.status_code}")
                body = response.raw.read(MAX_FHIR_RESPONSE_BYTES + 1, decode_content=True)
        except requests.RequestException as error:
            raise FetchError(type(error).__name__) from None
        if len(body) > MAX_FHIR_RESPONSE_BYTES:
            raise FetchError("response too large")
        try:
            payload = json.loads(body)
        except ValueError:
            raise FetchError("response is not JSON") from None
        if state(payload) == ERROR:
            raise FetchError("the FHIR server answered with an error")
        return payload


def gather(
    templates: dict[str, str],
    request: HookRequest,
    fetcher: Fetcher,
    may_fetch_from: Callable[[str], bool],
) -> Gathered:
    """All the data the templates ask for, from prefetch or fetched; 412 naming what could not be had."""
    payloads: dict[str, object] = {}
    wanted: dict[str, str] = {}
    for key, template in templates.items():
        present = key in request.prefetch
        if state(request.prefetch.get(key), present) in (NULL, DATA, EMPTY):
            payloads[key] = request.prefetch[key]
        else:
            wanted[key] = template
    if wanted:
        payloads.update(_fetch_missing(wanted, request, fetcher, may_fetch_from))
    supplied = {resource_type(t) for t in templates.values()}
    return Gathered(payloads=payloads, supplied=supplied, fetched=sorted(wanted))


def _fetch_missing(wanted: dict[str, str], request: HookRequest, fetcher: Fetcher,
                   may_fetch_from: Callable[[str], bool]) -> dict[str, object]:
    server = request.fhir_server
    if not server:
        _refuse(wanted, "not in the prefetch and the request names no fhirServer")
    if not may_fetch_from(server):
        _refuse(wanted, "not in the prefetch and the request's fhirServer is not allowed for this client")
    queries = {key: fill(template, request) for key, template in wanted.items()}
    unfillable = {k: wanted[k] for k, q in queries.items() if q is None}
    if unfillable:
        _refuse(unfillable, "not in the prefetch and the request lacks the context its query needs")
    results = fetcher.fetch_all(server, queries, request.access_token)
    failed = {k: f"{wanted[k]} ({r})" for k, r in results.items() if isinstance(r, Exception)}
    if failed:
        _refuse(failed, "not in the prefetch and the FHIR server did not provide it")
    return results


def _refuse(keys: dict[str, str], why: str) -> None:
    named = "; ".join(f"'{key}': {query}" for key, query in sorted(keys.items()))
    raise precondition_failed(f"Data this service needs is missing ({why}): {named}")


_METADATA_HOSTS = {"metadata", "metadata.google.internal", "metadata.azure.com"}


def is_safe_fetch_target(url: str) -> bool:
    """http(s) only, and no host that is or resolves to a link-local, multicast, unspecified or reserved address.

    Cloud metadata services live at link-local addresses (169.254.169.254, fe80::); a request must never make
    us fetch from them, nor from a file: or other scheme. Loopback and private ranges stay possible because a
    hospital's FHIR server may be there; the per-issuer allowlist is what limits them. The fetch checks the
    addresses again as it connects (webhook.outbound), where a name that changed its answer is caught."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    host = parts.hostname.lower().rstrip(".")
    if host in _METADATA_HOSTS:
        return False
    try:
        outbound.checked_addresses(host)
    except (OSError, UnicodeError):  # BlockedAddress is an OSError, as is a name that does not resolve
        return False
    return True
