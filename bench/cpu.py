"""CPU per call: what one order-sign call costs the gunicorn workers, over what discovery costs them
(`python -m bench cpu`), and the largest order-sign rate the machine sustains per core.

CPU time comes from the workers' own accounting (user + system in /proc/<pid>/stat), read before and after a fixed
number of calls sent open-loop at a moderate rate (`bench.arrivals`), so what other tenants of this shared machine do
moves it far less than it moves latency. Measured for discovery (the framework floor), each served ruleset's
order-sign service for its typical patient, and the cohort order-sign mix of `bench.openloop`. The endpoints take
turns in rounds, so that a slower spell of the machine falls on all of them alike; each round's own ratios are kept
beside the whole run's, and their spread shows how far the machine's noise moves the figure.

The sustainable rate is searched for with the cohort mix: rates double until open-loop p99 passes 50 ms, then the
gap between the last rate that held and the first that did not is halved twice. Per core is that rate over the
cores the server may run on.
"""
from __future__ import annotations

import datetime as dt
import os

from bench import arrivals, openloop, protocols
from bench.common import BodyTemplate, Server, cpu_seconds, hook_body

P99_LIMIT_MS = 50.0
CPU_RATE = 100  # per second, while CPU time is counted: well below saturation on two cores
CPU_ROUNDS = 5
FIRST_RATE, MAX_RATE = 50, 3200


def mixes(today: dt.date) -> list[arrivals.Mix]:
    found = [openloop.discovery_mix()]
    for ruleset_id in protocols.with_cohort():
        found.append(arrivals.Mix(protocols.service_id(ruleset_id, "order-sign"),
                                  [(protocols.service_path(ruleset_id, "order-sign"),
                                    BodyTemplate(hook_body(ruleset_id, "order-sign", today)).render)]))
    found.append(openloop.order_sign_mix(today))
    return found


def run(quick: bool = False, calls: int | None = None, step_seconds: float | None = None,
        max_rate: int = MAX_RATE, rounds: int = CPU_ROUNDS) -> dict:
    calls = calls or (300 if quick else 3000)
    step_seconds = step_seconds or (2.0 if quick else 8.0)
    found: dict = {"calls": calls, "rulesets": list(protocols.with_cohort()), "skipped": protocols.skipped(),
                   "p99_limit_ms": P99_LIMIT_MS, "cores": len(os.sched_getaffinity(0))}
    if not protocols.with_cohort():
        return found
    today = dt.date.today()
    chosen = mixes(today)
    with Server() as server:
        openloop.warm_up(server, chosen)
        found["per_call"] = _cpu_per_call(server, chosen, calls, rounds)
        found["search"] = _search(server, chosen[-1], step_seconds, max_rate)
    found["worst_order_sign_over_discovery"] = max(
        (row["over_discovery"] for name, row in found["per_call"].items() if name != "discovery"
         and row["over_discovery"] is not None), default=None)
    held = [step for step in found["search"] if step["held"]]
    best = max((step["rate"] for step in held), default=None)
    found["sustainable_rps"] = best
    found["sustainable_rps_per_core"] = round(best / found["cores"], 1) if best else None
    return found


def _cpu_per_call(server: Server, chosen: list[arrivals.Mix], calls: int, rounds: int) -> dict[str, dict]:
    """CPU ms per call of each mix (the first is discovery), over `calls` calls each sent in `rounds` turns."""
    rows = {mix.name: {"cpu_s": 0.0, "calls": 0, "errors": 0, "p50s": [], "round_ms": []} for mix in chosen}
    for turn in range(rounds):
        for mix in chosen:
            before = cpu_seconds(server.worker_pids())
            outcome = arrivals.run(server.base_url, mix, CPU_RATE, calls / rounds / CPU_RATE, seed=turn)
            used = cpu_seconds(server.worker_pids()) - before
            row = rows[mix.name]
            row["cpu_s"] += used
            row["calls"] += outcome["requests"]
            row["errors"] += outcome["errors"]
            row["p50s"].append(outcome["p50_ms"])
            row["round_ms"].append(1000 * used / max(1, outcome["requests"]))
    floor = rows[chosen[0].name]
    floor_ms = _ms_per_call(floor)
    found = {}
    for name, row in rows.items():
        cpu_ms = _ms_per_call(row)
        found[name] = {"cpu_ms": cpu_ms, "calls": row["calls"], "errors": row["errors"],
                       "p50_ms": sorted(row["p50s"])[len(row["p50s"]) // 2],
                       "round_cpu_ms": [round(ms, 3) for ms in row["round_ms"]],
                       "over_discovery": round(cpu_ms / floor_ms, 2) if floor_ms else None,
                       # The kernel counts CPU time in ticks (10 ms): a round too short to take one has no ratio.
                       "over_discovery_rounds": [round(mine / theirs, 2) for mine, theirs
                                                 in zip(row["round_ms"], floor["round_ms"], strict=True) if theirs]}
    return found


def _ms_per_call(row: dict) -> float:
    return round(1000 * row["cpu_s"] / max(1, row["calls"]), 3)


def _search(server: Server, mix: arrivals.Mix, seconds: float, max_rate: int) -> list[dict]:
    steps: list[dict] = []

    def probe(rate: float) -> bool:
        outcome = arrivals.run(server.base_url, mix, rate, seconds, seed=len(steps))
        held = outcome["p99_ms"] <= P99_LIMIT_MS and outcome["errors"] == 0
        steps.append({"rate": rate, "held": held, "p99_ms": outcome["p99_ms"],
                      "achieved_rps": outcome["achieved_rps"], "errors": outcome["errors"]})
        return held

    low, high = None, None
    rate = FIRST_RATE
    while rate <= max_rate:
        if not probe(rate):
            high = rate
            break
        low, rate = rate, rate * 2
    if low is not None and high is not None:
        for _ in range(2):
            middle = round((low + high) / 2)
            if probe(middle):
                low = middle
            else:
                high = middle
    return steps
