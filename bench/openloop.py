"""Open loop: the real server at fixed offered rates with Poisson arrivals (`python -m bench openloop`).

The closed-loop service section is a saturation test; an EHR instead sends a call whenever a clinician signs,
independently of how busy the service is. Here requests arrive at 50, 100, 200 and 400 per second (exponential
gaps, `bench.arrivals`) for the order-sign mix of every served ruleset's cohort (`bench.protocols`: each patient on
each day a decision changes, the rulesets interleaved) and, at the same rates on the same server, for discovery.
Per rate: the achieved rate, p50, p99 and the share of requests over 100 ms, latency counted from when each request
was due. Measured with the server on a fresh SQLite store and, when CDSRULES_TEST_PG_URL names a PostgreSQL
server, on a schema of its own there (dropped afterwards). Discovery is also driven by httperf when it is
installed, as a check on the client (`bench.httperf`).
"""
from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from contextlib import contextmanager

from bench import arrivals, httperf, protocols
from bench.common import BodyTemplate, Server, cohort_bodies

RATES = (50, 100, 200, 400)
QUICK_RATES = (50, 200)
PG_URL_VARIABLE = "CDSRULES_TEST_PG_URL"
DISCOVERY = "/cds-services"


def order_sign_mix(today: dt.date) -> arrivals.Mix:
    """The cohort order-sign requests of every served ruleset with a cohort, interleaved, each with a fresh
    hookInstance."""
    per_ruleset = [[(protocols.service_path(i, "order-sign"), BodyTemplate(body).render)
                    for body in cohort_bodies(i, "order-sign", today)] for i in protocols.with_cohort()]
    longest = max((len(r) for r in per_ruleset), default=0)
    mixed = [r[n % len(r)] for n in range(longest) for r in per_ruleset]
    return arrivals.Mix("order-sign cohort", mixed)


def discovery_mix() -> arrivals.Mix:
    return arrivals.Mix("discovery", [(DISCOVERY, None)])


def warm_up(server: Server, mixes: list[arrivals.Mix]) -> None:
    """Every worker compiles its caches and opens its store connections before the clock starts."""
    for mix in mixes:
        arrivals.run(server.base_url, mix, 40, 1.5)


def run(quick: bool = False, rates: tuple[float, ...] | None = None, seconds: float | None = None) -> dict:
    rates = rates or (QUICK_RATES if quick else RATES)
    seconds = seconds or (2.0 if quick else 10.0)
    found: dict = {"rates": list(rates), "seconds_per_rate": seconds, "rulesets": list(protocols.with_cohort()),
                   "skipped": protocols.skipped(), "slow_ms": arrivals.SLOW_MS, "stores": {}}
    if not protocols.with_cohort():
        return found
    mixes = order_sign_mix(dt.date.today()), discovery_mix()  # the server evaluates on the real date
    for store, url in _stores():
        with url as db_url:
            found["stores"][store] = _measure(db_url, mixes, rates, seconds)
    if PG_URL_VARIABLE not in os.environ:
        found["stores"]["postgresql"] = {"skipped": f"{PG_URL_VARIABLE} is not set"}
    return found


def _stores() -> Iterator:
    yield "sqlite", _sqlite()
    if os.environ.get(PG_URL_VARIABLE):
        yield "postgresql", pg_schema(os.environ[PG_URL_VARIABLE])


@contextmanager
def _sqlite() -> Iterator[None]:
    yield None  # the server's own fresh SQLite file


def pg_schema(base: str):
    """A URL on a fresh schema of the PostgreSQL server `base`, dropped afterwards."""
    from tests.store_backends import fresh_pg_schema

    return fresh_pg_schema(base, "bench")


def _measure(db_url: str | None, mixes: tuple[arrivals.Mix, arrivals.Mix], rates: tuple[float, ...],
             seconds: float) -> dict:
    order_sign, discovery = mixes
    server = Server(db_url=db_url)
    server.db_url = db_url  # None: the fresh SQLite file, whatever CDSRULES_BENCH_DB says
    levels = {}
    with server:
        warm_up(server, [order_sign, discovery])
        for n, rate in enumerate(rates):
            level = {"order-sign": arrivals.run(server.base_url, order_sign, rate, seconds, seed=n),
                     "discovery": arrivals.run(server.base_url, discovery, rate, seconds, seed=n)}
            level["discovery httperf"] = (httperf.run(server.port, DISCOVERY, rate, seconds) if httperf.installed()
                                          else {"skipped": httperf.NOT_INSTALLED})
            levels[f"{rate:g}"] = level
        workers = len(server.worker_pids())
    return {"workers": workers, "levels": levels}
