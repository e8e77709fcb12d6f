"""Back-off for wrong workbench tokens, per client address, so a token cannot be guessed at machine speed.

The first few wrong tokens from an address cost nothing (a typo); after that the address must wait before its next
try, twice as long after each further failure (1 s, 2 s, 4 s ... up to 5 minutes), and a try during the wait is
refused without looking at the token. A right token clears the address. The state is per worker process (with N
workers an address gets N times the tries), which still turns thousands of guesses a second into a handful an hour,
and needs no table in the store. Memory is bounded: at most MAX_ADDRESSES, the oldest forgotten first.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

FREE_FAILURES = 5
MAX_WAIT_SECONDS = 300.0
FORGET_AFTER_SECONDS = 3600.0  # an address quiet this long starts afresh
MAX_ADDRESSES = 10_000


@dataclass
class _Failures:
    count: int
    last: float  # when the last one happened, on the throttle's clock


class Throttle:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._failures: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()  # gunicorn may run several threads per worker

    def wait_seconds(self, address: str) -> float:
        """How long this address must wait before it may try a token; 0 if it may now."""
        with self._lock:
            failures = self._failures.get(address)
            if failures is None:
                return 0.0
            elapsed = self._clock() - failures.last
            if elapsed > FORGET_AFTER_SECONDS:
                del self._failures[address]
                return 0.0
            return max(0.0, _wait_after(failures.count) - elapsed)

    def failed(self, address: str) -> None:
        with self._lock:
            failures = self._failures.pop(address, None) or _Failures(0, 0.0)
            failures.count, failures.last = failures.count + 1, self._clock()
            self._failures[address] = failures  # now the newest
            while len(self._failures) > MAX_ADDRESSES:
                self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)


def _wait_after(count: int) -> float:
    if count < FREE_FAILURES:
        return 0.0
    return min(2.0 ** min(count - FREE_FAILURES, 16), MAX_WAIT_SECONDS)  # the exponent bounded: no overflow
