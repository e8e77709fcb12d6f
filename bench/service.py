"""Service: the real server under 1, 10 and 50 concurrent clients. For each served ruleset with request data
(`bench.protocols`): its order-sign and patient-view services with full prefetch for its typical cohort patient, and
its order-sign about the whole generated cohort (each patient on each day where a decision changes, in turn: every
path of the service); and discovery on the same server in the same run as the framework floor. Endpoints are named
by service id (`<ruleset id>-<hook>`, the cohort one with " cohort" after it).

Each level runs the endpoints in four interleaved rounds, so a burst of noise on this shared 2-core machine
lands on all of them alike; the ratio hook / discovery (p50) is computed within the level, over all rounds, and
for each round alone (their range shows how much the noise moves it). The workers' CPU time
per request (user + system, from /proc) is reported beside latency: on a shared machine it moves far less than
latency does, and its ratio hook / discovery is what the latency ratio tends to once the workers are saturated.
"""
from __future__ import annotations

import datetime as dt

from bench import load, protocols
from bench.common import BodyTemplate, RoundRobin, Server, cohort_bodies, cpu_seconds, hook_body

LEVELS = (1, 10, 50)
ROUNDS = 4  # per level, the endpoints take turns this many times
HOOKS = ("order-sign", "patient-view")  # each with its typical patient
COHORT = "cohort"  # after a service id: order-sign about many patients on many days, in turn


def cohort_name(ruleset_id: str) -> str:
    return f"{protocols.service_id(ruleset_id, 'order-sign')} {COHORT}"


def targets(today: dt.date) -> tuple[list[load.Target], dict[str, int]]:
    """The endpoints in the order they take turns, and the size in bytes of each one's request (a mean for the
    cohort)."""
    bodies: dict[str, tuple[str, BodyTemplate | RoundRobin]] = {}
    for ruleset_id in protocols.with_cohort():
        for hook in HOOKS:
            bodies[protocols.service_id(ruleset_id, hook)] = (protocols.service_path(ruleset_id, hook),
                                                              BodyTemplate(hook_body(ruleset_id, hook, today)))
        bodies[cohort_name(ruleset_id)] = (protocols.service_path(ruleset_id, "order-sign"),
                                           RoundRobin(cohort_bodies(ruleset_id, "order-sign", today)))
    found = [load.Target("discovery", "/cds-services")]
    found += [load.Target(name, path, body.render) for name, (path, body) in bodies.items()]
    return found, {name: body.size for name, (_, body) in bodies.items()}


def run(quick: bool = False) -> dict:
    today = dt.date.today()  # the server evaluates on the real date
    per_level = {1: 60, 10: 200, 50: 300} if quick else {1: 500, 10: 2000, 50: 3000}
    endpoints, request_bytes = targets(today)
    levels = {}
    with Server() as server:
        for target in endpoints:  # warm-up: every worker compiles caches, opens its DB connection
            load.run(server.base_url, target, 4, 40)
        rss_before = server.worker_rss_kb()
        for clients in LEVELS:
            merged: dict[str, load.Outcome] = {t.name: load.Outcome() for t in endpoints}
            cpu: dict[str, float] = {t.name: 0.0 for t in endpoints}
            round_p50s: list[dict[str, float]] = []
            for _ in range(ROUNDS):
                round_p50s.append({})
                for target in endpoints:
                    before = cpu_seconds(server.worker_pids())
                    outcome = load.run(server.base_url, target, clients, per_level[clients] // ROUNDS)
                    cpu[target.name] += cpu_seconds(server.worker_pids()) - before
                    round_p50s[-1][target.name] = outcome.summary()["p50_ms"]
                    into = merged[target.name]
                    into.latencies += outcome.latencies
                    into.errors += outcome.errors
                    into.first_error = into.first_error or outcome.first_error
                    into.elapsed += outcome.elapsed
            level = {name: outcome.summary() for name, outcome in merged.items()}
            for name, row in level.items():
                row["worker_cpu_ms"] = round(1000 * cpu[name] / max(1, row["requests"] + row["errors"]), 2)
            floor, floor_cpu = level["discovery"]["p50_ms"], level["discovery"]["worker_cpu_ms"]
            for hook in (t.name for t in endpoints if t.name != "discovery"):
                level[hook]["p50_over_discovery"] = round(level[hook]["p50_ms"] / floor, 2) if floor else None
                level[hook]["cpu_over_discovery"] = round(level[hook]["worker_cpu_ms"] / floor_cpu, 2) \
                    if floor_cpu else None
                # Each round's own ratio: their spread shows how far this machine's noise moves the figure.
                level[hook]["p50_over_discovery_rounds"] = [round(r[hook] / r["discovery"], 2) for r in round_p50s
                                                            if r.get(hook) and r.get("discovery")]
            levels[str(clients)] = level
        rss_after = server.worker_rss_kb()
    return {"workers": len(rss_before), "levels": levels, "request_bytes": request_bytes,
            "rulesets": list(protocols.with_cohort()), "skipped": protocols.skipped(),
            "worker_rss_kb": {"after_warmup": rss_before, "after_run": rss_after}}

