"""The store goes away while the service runs (PostgreSQL behind a link we cut): a call whose audit record cannot
be written gets 503, never advice without its record; the failed writes are counted, /readyz says 503, and when the
link comes back everything recovers. The same holds for an audit write that fails for any other reason."""
from __future__ import annotations

import os
import socket
import threading
import uuid

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import TODAY, build_app, patient_record
from tests.store_backends import BACKENDS, PG_URL_VARIABLE, empty_store

pytestmark = pytest.mark.timeout(60)


class CuttableLink:
    """A TCP forwarder on loopback in front of PostgreSQL; `cut()` drops every connection and refuses new ones."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.open = True
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            server = socket.create_connection(self.target)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.open = False
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.sockets.clear()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_through_a_store_outage_calls_get_503_and_readyz_tells(tmp_path, fhir_server):
    if not os.environ.get(PG_URL_VARIABLE):
        pytest.skip(f"{PG_URL_VARIABLE} is not set (run `eval \"$(bash .ci/postgres.sh)\"`)")
    with empty_store("postgresql", tmp_path) as url:
        target = make_url(url)
        link = CuttableLink(target.host, target.port)
        try:
            app = build_app(tmp_path, fhir_server, DB_URL=target.set(host="127.0.0.1", port=link.port)
                            .render_as_string(hide_password=False))
            client = app.test_client()
            fhir_server.reset(patient_record(TODAY, platelets=40))
            body = {"hook": "patient-view", "fhirServer": fhir_server.url,
                    "context": {"userId": "Practitioner/1", "patientId": "p1"}}
            failures = client.get("/readyz").get_json()["auditFailures"]

            link.cut()
            answer = client.post("/cds-services/hetrombopag-patient-view",
                                 json={**body, "hookInstance": str(uuid.uuid4())})
            assert answer.status_code == 503 and answer.get_json()["resourceType"] == "OperationOutcome"
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.get_json()["resourceType"] == "OperationOutcome"

            link.restore()
            assert client.post("/cds-services/hetrombopag-patient-view",
                               json={**body, "hookInstance": str(uuid.uuid4())}).status_code == 200
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.get_json()["auditFailures"] == failures + 1
        finally:
            link.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_call_whose_audit_record_cannot_be_written_gets_503_not_cards(backend, tmp_path, fhir_server):
    with empty_store(backend, tmp_path) as url:
        app = build_app(tmp_path, fhir_server, DB_URL=url)
        client = app.test_client()
        store = app.extensions["cdsrules"].store
        fhir_server.reset(patient_record(TODAY, platelets=40))
        body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": fhir_server.url,
                "context": {"userId": "Practitioner/1", "patientId": "p1"}}
        assert client.post("/cds-services/hetrombopag-patient-view", json=body).get_json()["cards"]
        with store.engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE audit")  # the store answers, but this write cannot land
        answer = client.post("/cds-services/hetrombopag-patient-view",
                             json={**body, "hookInstance": str(uuid.uuid4())})
        assert answer.status_code == 503
        assert answer.get_json()["resourceType"] == "OperationOutcome" and "cards" not in answer.get_json()
        store.engine.dispose()
