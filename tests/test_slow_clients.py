"""Slow clients against the real server (`cdsrules serve`, its default workers and threads, on loopback): a
connection that dribbles its request head or body, or goes on sending after its answer, holds no worker thread,
so a normal order-sign call is answered at once; a request not whole within the deadline gets 408 and is closed.
And what the worker does besides reading whole requests: keep-alive, pipelining, 100-continue, chunked bodies,
bodies over the limit and malformed heads."""
from __future__ import annotations

import json
import select
import socket
import threading
import time

import pytest
import requests

from tests.conftest import REPO
from webhook.server import default_workers
from webhook.worker import REQUEST_TIMEOUT

pytestmark = pytest.mark.timeout(120)

ORDER_SIGN = "/cds-services/hetrombopag-order-sign"
BODY = (REPO / "examples" / "order-sign-request.json").read_bytes()
DRIBBLE_S = 2.0  # one byte every 2 s
IN_TIME_S = 3.0  # a normal call is answered within this, whatever the slow clients do


def request_bytes(body: bytes = BODY, headers: tuple[str, ...] = ()) -> bytes:
    """An order-sign call as it goes on the wire."""
    head = [f"POST {ORDER_SIGN} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@pytest.fixture(scope="module")
def server(plain_server):
    return plain_server


def address(server) -> tuple[str, int]:
    host, port = server.base_url.removeprefix("http://").split(":")
    return host, int(port)


class SlowClient(threading.Thread):
    """One connection that sends `steady` at once, then `dribbled` a byte every `interval` seconds, listening all
    the while: it notes what the server answers and when the server closes (or, `past_eof`, when it resets the
    connection after its own end of the stream); it gives up after `limit_s`."""

    def __init__(self, target: tuple[str, int], steady: bytes, dribbled: bytes, limit_s: float,
                 interval: float = DRIBBLE_S, past_eof: bool = False):
        super().__init__(daemon=True)
        self.target, self.steady, self.dribbled, self.limit_s = target, steady, dribbled, limit_s
        self.interval, self.past_eof = interval, past_eof
        self.answer = b""
        self.started_at = self.closed_at = None

    def run(self) -> None:
        with socket.create_connection(self.target, timeout=5) as sock:
            self.started_at = time.monotonic()
            try:
                sock.sendall(self.steady)
                for byte in self.dribbled:
                    sock.sendall(bytes([byte]))
                    if self._closed_within(sock, self.interval):
                        return
                self._closed_within(sock, self.limit_s)
            except OSError:  # reset: closed, too
                self.closed_at = time.monotonic()

    def _closed_within(self, sock: socket.socket, wait_s: float) -> bool:
        until = min(time.monotonic() + wait_s, self.started_at + self.limit_s)
        while (left := until - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                continue
            data = sock.recv(65536)  # raises once the server has reset the connection
            if data:
                self.answer += data
            elif self.past_eof:  # the server's end of stream: wait, then send the next byte all the same
                time.sleep(max(0.0, until - time.monotonic()))
            else:
                self.closed_at = time.monotonic()
                return True
        return time.monotonic() >= self.started_at + self.limit_s

    @property
    def open_for_s(self) -> float | None:
        return None if self.closed_at is None else self.closed_at - self.started_at


def normal_calls_in_time(server, count: int) -> list[float]:
    """`count` order-sign calls, each on a new connection (so each may meet a different worker): their times."""
    times = []
    for _ in range(count):
        start = time.monotonic()
        response = requests.post(server.base_url + ORDER_SIGN, data=BODY,
                                 headers={"Content-Type": "application/json"}, timeout=IN_TIME_S + 2)
        assert response.status_code == 200 and "cards" in response.json()
        times.append(time.monotonic() - start)
    return times


def test_slow_heads_and_bodies_hold_no_worker_and_get_408_at_the_deadline(server):
    head, body = request_bytes().split(b"\r\n\r\n", 1)
    head += b"\r\n\r\n"
    count = default_workers() + 2  # every worker's one thread, and then some
    limit_s = REQUEST_TIMEOUT + 8
    slow = [SlowClient(address(server), b"", head + body, limit_s) if n % 2 == 0  # dribbles its head
            else SlowClient(address(server), head, body, limit_s)  # sends its head, dribbles its body
            for n in range(count)]
    for client in slow:
        client.start()
    time.sleep(1)  # every slow client has sent its first bytes

    times = normal_calls_in_time(server, default_workers())
    assert max(times) < IN_TIME_S, times

    for client in slow:
        client.join(limit_s + 5)
    open_for = [client.open_for_s for client in slow]
    assert all(t is not None and REQUEST_TIMEOUT - 1 <= t <= REQUEST_TIMEOUT + 2 for t in open_for), open_for
    for client in slow:
        status, _, rest = client.answer.partition(b"\r\n")
        assert status == b"HTTP/1.1 408 Request Timeout", client.answer
        outcome = json.loads(rest.split(b"\r\n\r\n", 1)[1])
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "timeout"


def test_clients_that_go_on_sending_after_their_answer_do_not_hold_a_worker(server):
    """A worker closes such a connection by reading what comes until the client closes too, so that the answer is
    not lost to a reset; that reading must not hold the worker while the client dribbles."""
    closing = request_bytes(b"{}", ("Connection: close",))  # a quick 400, then the connection closes
    slow = [SlowClient(address(server), closing, b"x" * 20, limit_s=10, interval=0.5, past_eof=True)
            for _ in range(4 * default_workers())]
    for client in slow:
        client.start()
    time.sleep(1)

    times = normal_calls_in_time(server, default_workers())
    assert max(times) < IN_TIME_S, times
    for client in slow:
        client.join(15)
        assert client.answer.startswith(b"HTTP/1.1 400"), client.answer
        assert client.open_for_s is not None and client.open_for_s < 5, client.open_for_s  # reset 2 s after


# --- what the worker keeps doing -------------------------------------------------------------


def exchange(server, data: bytes, then: bytes = b"", wait_s: float = 5) -> bytes:
    """Send `data` (and `then` after the server's first bytes, if any), read until the server closes."""
    with socket.create_connection(address(server), timeout=wait_s) as sock:
        sock.sendall(data)
        received = b""
        if then:
            received = sock.recv(65536)
            sock.sendall(then)
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_pipelined_requests_on_one_kept_alive_connection_are_answered_in_order(server):
    first = request_bytes()
    second = request_bytes(b"{nope", ("Connection: close",))
    answers = exchange(server, first + second)
    assert answers.startswith(b"HTTP/1.1 200 OK") and answers.count(b"HTTP/1.1 ") == 2
    assert b"HTTP/1.1 400 BAD REQUEST" in answers.upper()


def test_a_client_that_waits_for_100_continue_gets_it_and_then_its_answer(server):
    head, body = request_bytes(BODY, ("Expect: 100-continue", "Connection: close")).split(b"\r\n\r\n")
    answers = exchange(server, head + b"\r\n\r\n", then=body, wait_s=3)
    assert answers.startswith(b"HTTP/1.1 100 Continue\r\n\r\n") and b"HTTP/1.1 200 OK" in answers


def test_a_chunked_body_is_read_whole(server):
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(BODY[i:i + 1000]), BODY[i:i + 1000]) for i in range(0, len(BODY), 1000))
    head = (f"POST {ORDER_SIGN} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    assert exchange(server, head + chunks + b"0\r\n\r\n").startswith(b"HTTP/1.1 200 OK")


def test_a_body_over_the_limit_is_refused_before_it_is_sent(server):
    head = (f"POST {ORDER_SIGN} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {6 * 1024 * 1024}\r\n\r\n").encode()
    status, _, rest = exchange(server, head + b'{"hook": ').partition(b"\r\n")
    assert status == b"HTTP/1.1 413 Request Entity Too Large"
    assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["resourceType"] == "OperationOutcome"


def test_a_malformed_head_is_answered_400_at_once(server):
    start = time.monotonic()
    two_lengths = b"POST /cds-services HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
    answer = exchange(server, two_lengths)
    assert answer.startswith(b"HTTP/1.1 400") and time.monotonic() - start < IN_TIME_S


def test_an_idle_connection_is_closed_after_the_keepalive_time(server):
    start = time.monotonic()
    assert exchange(server, b"", wait_s=15) == b""
    assert 4 <= time.monotonic() - start <= 8  # keepalive 5 s, checked once a second
