"""Soak: RSS of each gunicorn worker before and after 100,000 order-sign calls (`python -m bench soak`), shared
among the order-sign services of the served rulesets with request data (`bench.protocols`), in turn.

"Before" is taken after a warm-up, once caches, the DB connection pool and allocator arenas have reached their
working size, so the growth figure is what a long-running worker would keep adding. Calls are sent in chunks and
RSS is sampled after each, so a slow leak shows as a slope rather than one number.
"""
from __future__ import annotations

import datetime as dt

from bench import load, protocols
from bench.common import BodyTemplate, Server, hook_body

CLIENTS = 10
WARMUP = 2000


def run(quick: bool = False, calls: int | None = None) -> dict:
    calls = calls or (5000 if quick else 100_000)
    targets = [load.Target(protocols.service_id(i, "order-sign"), protocols.service_path(i, "order-sign"),
                           BodyTemplate(hook_body(i, "order-sign", dt.date.today())).render)
               for i in protocols.with_cohort()]
    if not targets:
        return {"skipped": protocols.skipped(), "calls": 0, "clients": CLIENTS, "errors": 0,
                "max_growth_mb": None}
    chunks = 10
    share = calls // chunks // len(targets)  # each target's calls in a chunk
    with Server() as server:
        for target in targets:
            load.run(server.base_url, target, CLIENTS, min(WARMUP, calls // 5) // len(targets))
        before = server.worker_rss_kb()
        samples, errors, latencies, elapsed = [], 0, [], 0.0
        for n in range(chunks):
            for target in targets:
                outcome = load.run(server.base_url, target, CLIENTS, share)
                errors += outcome.errors
                latencies += outcome.latencies
                elapsed += outcome.elapsed
            samples.append({"calls": (n + 1) * share * len(targets), "rss_kb": server.worker_rss_kb()})
        after = server.worker_rss_kb()
    growth = {str(pid): round((after[pid] - before[pid]) / 1024, 2) for pid in before if pid in after}
    # From 30% of the calls on: a leak keeps climbing there; a worker still filling its arenas has stopped.
    settled = samples[2]["rss_kb"]
    steady = {str(pid): round((after[pid] - settled[pid]) / 1024, 2) for pid in settled if pid in after}
    return {"steady_growth_mb": steady, "max_steady_growth_mb": max(steady.values()) if steady else None,
            "calls": share * chunks * len(targets), "clients": CLIENTS, "errors": errors,
            "services": [t.name for t in targets], "skipped": protocols.skipped(),
            "latency": load.Outcome(latencies=latencies, elapsed=elapsed).summary(),
            "rss_kb_before": before, "rss_kb_after": after, "growth_mb": growth,
            "max_growth_mb": max(growth.values()) if growth else None, "samples": samples}
