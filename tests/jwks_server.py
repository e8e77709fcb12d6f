"""A JWKS endpoint over HTTPS on loopback, for the key-fetching tests. It counts the requests it gets, and can
answer 500 (a failing endpoint) or hold each request until the test releases it (a slow one).

The certificate is self-signed for 127.0.0.1; the service trusts it when SSL_CERT_FILE names it.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOLD_LIMIT_SECONDS = 30  # a held request is answered by then even if the test never releases it


def write_loopback_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its private key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificate_path, key_path = directory / "loopback.pem", directory / "loopback.key"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return certificate_path, key_path


class JwksServer:
    """Serves `jwks` at /jwks.json. `mode` is "serve", "fail" (500) or "hold" (wait for release(), then serve)."""

    def __init__(self, certificate: tuple[Path, Path], jwks: dict):
        self.jwks = jwks
        self.mode = "serve"
        self.hits = 0
        self.arrived = threading.Event()  # set when the first request comes in
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*certificate)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}/jwks.json"

    @property
    def holding(self) -> bool:
        """A request came in and waits to be released."""
        return self.mode == "hold" and self.arrived.is_set() and not self._released.is_set()

    def start(self) -> JwksServer:
        self._thread.start()
        return self

    def release(self) -> None:
        self._released.set()

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def _answer(self) -> tuple[int, dict]:
        with self._lock:
            self.hits += 1
        self.arrived.set()
        if self.mode == "hold":
            self._released.wait(HOLD_LIMIT_SECONDS)
        return (500, {"error": "failing on purpose"}) if self.mode == "fail" else (200, self.jwks)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server naming
                status, body = server._answer()
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up waiting: that is what a held request is for

            def log_message(self, *args) -> None:
                pass

        return Handler
