"""An async HTTP load generator (aiohttp): N clients, each sending its next request when the last one answered.

Closed-loop on purpose: that is how an EHR's users behave (one call per signing), and latency is then measured
at a known concurrency. Every response is read whole and must be 200; anything else counts as an error.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from bench.common import summarise_ms


@dataclass
class Target:
    """One endpoint: GET when `body` is None, else POST with a fresh body per call."""

    name: str
    path: str
    body: Callable[[], bytes] | None = None


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    elapsed: float = 0.0

    def summary(self) -> dict:
        return {**summarise_ms(self.latencies, self.elapsed), "errors": self.errors,
                **({"first_error": self.first_error} if self.first_error else {})}


async def _drive(base_url: str, target: Target, clients: int, requests: int) -> Outcome:
    outcome = Outcome()
    remaining = requests
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    headers = {"Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as session:

        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                try:
                    if target.body is None:
                        response = await session.get(target.path)
                    else:
                        response = await session.post(target.path, data=target.body(), headers=headers)
                    async with response:
                        await response.read()
                        status = response.status
                except aiohttp.ClientError as error:
                    status, text = None, f"{type(error).__name__}: {error}"
                if status == 200:
                    outcome.latencies.append(time.perf_counter() - started)
                else:
                    outcome.errors += 1
                    outcome.first_error = outcome.first_error or (f"HTTP {status}" if status else text)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        outcome.elapsed = time.perf_counter() - started
    return outcome


def run(base_url: str, target: Target, clients: int, requests: int) -> Outcome:
    """Send `requests` calls to `target` from `clients` concurrent clients; the latencies of the 200s."""
    return asyncio.run(_drive(base_url, target, clients, requests))
