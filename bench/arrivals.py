"""An open-loop load generator (aiohttp): requests sent at Poisson arrival times, whatever the server is doing.

This is how an EHR loads a CDS service: clinicians sign orders independently of one another, so a slow answer does
not hold the next signing back. Each request's latency is measured from the time it was due to be sent, not from
when the client got round to sending it, so a stall of the client or the server counts against the figure (no
coordinated omission); how late the client itself sent is reported beside it (`send_lag_p99_ms`), so a saturated
client shows as such instead of as a slow server.

Connections are kept alive and pooled without a limit: a request that finds every connection busy opens another,
as a busy EHR's connection pool does. httperf (Debian) was the first choice, but its session log keeps a POST body
in a 10,000-byte buffer, and a cohort order-sign request is 10 to 60 KB; it is kept as a cross-check on discovery.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from bench.common import percentile

SLOW_MS = 100.0  # what a clinician notices at signing; the share of requests over it is reported


@dataclass
class Mix:
    """What to send, in turn: (path, body renderer or None for GET)."""

    name: str
    requests: list[tuple[str, Callable[[], bytes] | None]]

    def __post_init__(self) -> None:
        self._next = 0

    def next(self) -> tuple[str, Callable[[], bytes] | None]:
        chosen = self.requests[self._next % len(self.requests)]
        self._next += 1
        return chosen


def poisson_arrivals(rate: float, count: int, seed: int) -> list[float]:
    """Send times in seconds from the start: exponential gaps with mean 1 / rate."""
    draw, at, found = random.Random(seed), 0.0, []
    for _ in range(count):
        at += draw.expovariate(rate)
        found.append(at)
    return found


async def _drive(base_url: str, mix: Mix, arrivals: list[float]) -> dict:
    latencies: list[float] = []
    lags: list[float] = []
    errors: list[str] = []
    finished = [0.0]
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as session:
        start = time.perf_counter() + 0.05

        async def send(due: float, path: str, body: Callable[[], bytes] | None) -> None:
            lags.append(time.perf_counter() - due)
            try:
                if body is None:
                    response = await session.get(path)
                else:
                    response = await session.post(path, data=body(), headers=headers)
                async with response:
                    await response.read()
                    status = response.status
            except (TimeoutError, aiohttp.ClientError) as error:
                errors.append(f"{type(error).__name__}: {error}")
                return
            done = time.perf_counter()
            finished[0] = max(finished[0], done)
            if status == 200:
                latencies.append(done - due)
            else:
                errors.append(f"HTTP {status}")

        tasks = []
        for offset in arrivals:
            due = start + offset
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            path, body = mix.next()
            tasks.append(asyncio.create_task(send(due, path, body)))
        await asyncio.gather(*tasks)
    return _summary(latencies, lags, errors, arrivals, finished[0] - start)


def _summary(latencies: list[float], lags: list[float], errors: list[str], arrivals: list[float],
             elapsed: float) -> dict:
    values, lags = sorted(latencies), sorted(lags)
    ms = lambda v: round(v * 1000, 2)  # noqa: E731
    offered = len(arrivals) / arrivals[-1] if arrivals else 0.0
    return {"requests": len(arrivals), "offered_rps": round(offered, 1),
            "achieved_rps": round(len(values) / elapsed, 1) if elapsed > 0 else 0.0,
            "p50_ms": ms(percentile(values, 0.50)), "p99_ms": ms(percentile(values, 0.99)),
            "over_100ms_share": round(sum(v * 1000 > SLOW_MS for v in values) / len(values), 4) if values else None,
            "send_lag_p99_ms": ms(percentile(lags, 0.99)), "errors": len(errors),
            **({"first_error": errors[0]} if errors else {})}


def run(base_url: str, mix: Mix, rate: float, seconds: float, seed: int = 1) -> dict:
    """Send `rate * seconds` requests of `mix` at Poisson times; latency, achieved rate and errors."""
    arrivals = poisson_arrivals(rate, max(1, round(rate * seconds)), seed)
    return asyncio.run(_drive(base_url, mix, arrivals))
