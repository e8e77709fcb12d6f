"""The gunicorn worker: gthread's pool of threads, handed only requests that have arrived whole.

gunicorn's gthread worker gives a connection to a pool thread as soon as it is readable, and the thread then reads
the request with blocking calls: a client that sends its head or body a byte at a time holds the thread for as long
as it goes on, and as many such clients as workers x threads stall every call. Here the worker's own selector loop
reads every connection without blocking until the whole request (head and body) is in memory, framed by gunicorn's
incremental HTTP/1.1 parser, and only then hands it to a thread, which parses it from memory and never reads the
socket. A slow client costs a socket and the bytes it has sent, never a thread; a request not whole within
REQUEST_TIMEOUT of its first byte is answered 408 and its connection closed. Closing lingers in the loop as well,
where gthread blocks its loop up to 2 s on each close.

Plain HTTP/1.1 only (no TLS, no HTTP/2): TLS ends at the reverse proxy in front.
"""
from __future__ import annotations

import errno
import json
import selectors
import socket
import time
from functools import partial
from http import HTTPStatus

from gunicorn.asgi.parser import PythonProtocol
from gunicorn.http.parser import RequestParser
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from webhook.app import DEFAULTS
from webhook.outcome import operation_outcome

REQUEST_TIMEOUT = 10.0  # seconds from a request's first byte to its last; then 408
LINGER = 2.0  # seconds a closing connection is drained, so that unread input does not reset the answer
LINGER_BYTES = 1024 * 1024
RECEIVE_SIZE = 64 * 1024
SWEEP_S = 0.25  # how often deadlines are checked: each check looks at every waiting connection
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Arrival:
    """A request on its way in: the bytes so far, and gunicorn's incremental parser, which says when they are whole."""

    def __init__(self, limits: dict):
        self.received = bytearray()
        self.head_done = False
        self.body_bytes = 0
        self.continued = False  # "100 Continue" sent
        self.framer = PythonProtocol(on_headers_complete=self._on_head, on_body=self._on_body, **limits)

    def _on_head(self) -> None:
        self.head_done = True

    def _on_body(self, chunk: bytes) -> None:
        self.body_bytes += len(chunk)

    def expects_continue(self) -> bool:
        return any(name == b"expect" and value.lower() == b"100-continue" for name, value in self.framer.headers)


class _Conn(TConn):
    """A connection, and what the loop waits for on it until `deadline`: a request (`arrival`), or else the client
    closing after us."""

    arrival: _Arrival | None = None
    deadline: float = 0.0
    drained: int = 0


class RequestBufferingWorker(ThreadWorker):
    """gthread, but connections wait in its selector loop for their whole request, then for their end."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._waiting: set[_Conn] = set()  # in the selector, each until its deadline
        self._next_sweep = 0.0
        self._stop_linger_until: float | None = None
        self.max_body = DEFAULTS["MAX_CONTENT_LENGTH"]
        # Read once: each look-up in gunicorn's config costs a few microseconds, and a request would make seven.
        cfg = self.cfg
        self._idle_s = cfg.keepalive
        self._limits = {"limit_request_line": cfg.limit_request_line,
                        "limit_request_fields": cfg.limit_request_fields,
                        "limit_request_field_size": cfg.limit_request_field_size,
                        "permit_unconventional_http_method": cfg.permit_unconventional_http_method,
                        "permit_unconventional_http_version": cfg.permit_unconventional_http_version}

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.max_body = getattr(self.wsgi, "config", {}).get("MAX_CONTENT_LENGTH") or self.max_body

    # --- connections come in, and come back after each answer ------------------------------------

    def accept(self, listener) -> None:
        try:
            sock, client = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self._await_request(_Conn(self.cfg, sock, client, listener.getsockname()), b"")

    def finish_request(self, conn: _Conn, fs) -> None:
        """On the loop's thread, once a pool thread has answered: wait for the next request, or close."""
        try:
            keep_alive = not fs.cancelled() and bool(fs.result())
        except Exception:
            keep_alive = False
        if keep_alive:
            self._await_request(conn, conn.parser.unreader.take_buffered())  # a pipelined request may be there
        else:
            self._close(conn)

    # --- a request arrives ---------------------------------------------------------------------------

    def _await_request(self, conn: _Conn, pending: bytes) -> None:
        conn.arrival, conn.parser = _Arrival(self._limits), None
        conn.deadline = time.monotonic() + self._idle_s  # idle, as gthread keeps a connection alive
        conn.sock.setblocking(False)
        self._watch(conn, self._on_readable)
        if pending:
            self._take(conn, pending)

    def _on_readable(self, conn: _Conn, _sock) -> None:
        try:
            data = conn.sock.recv(RECEIVE_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            self._take(conn, data)
        else:
            self._drop(conn)  # the client went away

    def _take(self, conn: _Conn, data: bytes) -> None:
        arrival = conn.arrival
        if not arrival.received:
            conn.deadline = time.monotonic() + REQUEST_TIMEOUT
        arrival.received += data
        framer = arrival.framer
        try:
            framer.feed(data)
        except Exception:  # noqa: BLE001 - a ParseError, or any fault: never one that stops this loop
            self._dispatch(conn)  # gunicorn's own parser meets the same fault and answers 400
            return
        if max(framer.content_length or 0, arrival.body_bytes) > self.max_body:
            self._refuse(conn, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too-long",
                         f"The request body is larger than {self.max_body} bytes.")
        elif framer.is_complete:
            self._dispatch(conn)
        elif arrival.head_done and not arrival.continued and arrival.expects_continue():
            arrival.continued = True  # gunicorn sends its own too, later: a client reads any number of them
            _send_quietly(conn.sock, CONTINUE)

    def _dispatch(self, conn: _Conn) -> None:
        """To a pool thread, which reads the request from memory: never from a client that may stall it."""
        self._unwatch(conn)
        conn.parser = RequestParser(self.cfg, [bytes(conn.arrival.received)], conn.client)
        conn.arrival, conn.data_ready = None, True
        self.enqueue_req(conn)

    def _refuse(self, conn: _Conn, status: HTTPStatus, code: str, diagnostics: str) -> None:
        body = json.dumps(operation_outcome(code, diagnostics)).encode()
        head = (f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        self.log.info("%s %s from %s: %s", status.value, status.phrase, conn.client, diagnostics)
        _send_quietly(conn.sock, head + body)
        self._unwatch(conn)
        self._close(conn)

    # --- and connections close ------------------------------------------------------------------------

    def _close(self, conn: _Conn) -> None:
        """Send FIN and read what the client still sends until it closes too (or LINGER), without blocking."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(conn)
            return
        conn.arrival, conn.drained = None, 0
        conn.deadline = time.monotonic() + LINGER
        conn.sock.setblocking(False)
        self._watch(conn, self._on_drainable)

    def _on_drainable(self, conn: _Conn, _sock) -> None:
        try:
            data = conn.sock.recv(RECEIVE_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.drained += len(data)
        if not data or conn.drained > LINGER_BYTES:
            self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        self._unwatch(conn)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Every SWEEP_S (the loop calls this each turn): a request late past its deadline gets 408; idle and closing
        connections are closed."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_S
        if not self.alive and self._stop_linger_until is None:
            self._stop_linger_until = now + STOP_KEEPALIVE_LINGER  # as gthread lets kept-alive ones go
        for conn in [c for c in self._waiting if c.deadline <= now or self._idle_past_stop(c, now)]:
            if conn.arrival is not None and conn.arrival.received:
                self._refuse(conn, HTTPStatus.REQUEST_TIMEOUT, "timeout",
                             f"The request did not arrive whole within {REQUEST_TIMEOUT:g} s.")
            else:
                self._drop(conn)

    def _idle_past_stop(self, conn: _Conn, now: float) -> bool:
        stopping = self._stop_linger_until is not None and now >= self._stop_linger_until
        return stopping and conn.arrival is not None and not conn.arrival.received

    def _watch(self, conn: _Conn, callback) -> None:
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(callback, conn))
        self._waiting.add(conn)

    def _unwatch(self, conn: _Conn) -> None:
        if conn in self._waiting:
            self._waiting.discard(conn)
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    """A short answer, without blocking: one the client will not read is lost with its connection."""
    try:
        sock.send(data)
    except OSError:
        pass
