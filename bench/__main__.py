"""Engine benchmark: evaluations per second and p50/p99 microseconds, in one process.

Prints a table and writes bench/results.json. Figures are for comparison within one run on one machine.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from engine.loader import load_ruleset
from engine.runtime import Engine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"


def bench_ruleset(path: Path, rounds: int = 3000) -> dict:
    ruleset, engine = load_ruleset(path), Engine()
    cases = [(c.get("facts", {}), str(c["date"]), c.get("hook")) for c in ruleset.tests if "facts" in c]
    for facts, date, hook in cases:  # warm-up and compile
        engine.evaluate(ruleset, facts, date, hook)
    timings = []
    started = time.perf_counter()
    for i in range(rounds):
        facts, date, hook = cases[i % len(cases)]
        t0 = time.perf_counter_ns()
        engine.evaluate(ruleset, facts, date, hook)
        timings.append((time.perf_counter_ns() - t0) / 1000)
    elapsed = time.perf_counter() - started
    timings.sort()
    return {"ruleset": ruleset.ref, "evaluations": rounds, "per_second": round(rounds / elapsed),
            "p50_us": round(statistics.median(timings)), "p99_us": round(timings[int(len(timings) * 0.99)])}


def main() -> None:
    targets = [ROOT / "examples" / "rulesets" / "demo-dosing" / "1.0.0.yaml"]
    targets += sorted(p for p in (ROOT / "rules").glob("*/[0-9]*.yaml"))
    rows = [bench_ruleset(path) for path in targets]
    print(f"{'ruleset':28} {'evals/s':>9} {'p50 us':>8} {'p99 us':>8}")
    for row in rows:
        print(f"{row['ruleset']:28} {row['per_second']:>9} {row['p50_us']:>8} {row['p99_us']:>8}")
    RESULTS.write_text(json.dumps({"engine": rows}, indent=2))
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
