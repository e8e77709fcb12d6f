"""A tiny FHIR R4 server on loopback, for the fallback tests: it serves a fixed set of resources and records
every request (path and headers), so tests can check what the CDS service fetched and with which token.

Reads (`GET /Patient/1`) and searches (`GET /Observation?patient=1&code=http://loinc.org|777-3,...`) are
supported; search parameters other than patient/subject and code are accepted and ignored.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class FhirData:
    """The resources and how reads and searches are answered from them, without a server (to fill prefetch)."""

    def __init__(self, resources: list[dict] | None = None):
        self.resources = list(resources or [])
        self.fail_types: set[str] = set()  # resource types answered with 500

    def answer(self, path: str) -> tuple[int, dict]:
        parts = urlsplit(path)
        segments = [s for s in parts.path.removeprefix("/fhir").split("/") if s]
        if not segments:
            return 404, _outcome("not-found", "no resource type")
        kind = segments[0]
        if kind in self.fail_types:
            return 500, _outcome("exception", "failing on purpose")
        if len(segments) == 2:
            found = [r for r in self.resources if r["resourceType"] == kind and r.get("id") == segments[1]]
            return (200, found[0]) if found else (404, _outcome("not-found", f"{kind}/{segments[1]}"))
        query = parse_qs(parts.query)
        matches = [r for r in self.resources if r["resourceType"] == kind and _matches(r, query)]
        return 200, {"resourceType": "Bundle", "type": "searchset", "total": len(matches),
                     "entry": [{"resource": r} for r in matches]}


class FhirServer(FhirData):
    """FhirData served over HTTP on loopback, recording every request."""

    def __init__(self, resources: list[dict] | None = None):
        super().__init__(resources)
        self.requests: list[dict] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/fhir"

    def start(self) -> FhirServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self, resources: list[dict] | None = None) -> None:
        self.requests.clear()
        self.fail_types.clear()
        if resources is not None:
            self.resources = list(resources)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server naming
                server.requests.append({"path": self.path, "headers": dict(self.headers)})
                status, body = server.answer(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        return Handler


def _matches(resource: dict, query: dict[str, list[str]]) -> bool:
    for name in ("patient", "subject"):
        for wanted in query.get(name, []):
            if _patient_of(resource) != wanted.removeprefix("Patient/"):
                return False
    for wanted in query.get("code", []):
        tokens = {t for t in wanted.split(",") if t}
        if not tokens & _codes(resource):
            return False
    return True


def _patient_of(resource: dict) -> str | None:
    for key in ("subject", "patient"):
        reference = (resource.get(key) or {}).get("reference", "")
        if reference.startswith("Patient/"):
            return reference.removeprefix("Patient/")
    return None


def _codes(resource: dict) -> set[str]:
    concept = resource.get("code") or resource.get("medicationCodeableConcept") or {}
    found = set()
    for coding in concept.get("coding") or []:
        found.add(f"{coding.get('system')}|{coding.get('code')}")
        found.add(str(coding.get("code")))
    return found


def _outcome(code: str, diagnostics: str) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code,
                                                            "diagnostics": diagnostics}]}
