"""`python -m bench [SECTION ...] [--quick]`: benchmarks side by side, a printed table and bench/results.json.

Sections: engine, stages, startup, scaling, service, openloop, cpu, zen (the default run, a few minutes) and soak
(100,000 calls: only when named). Each section measures every served ruleset it has data for (`bench.protocols`),
labelled by ruleset id, and names the ones it skips. `--quick` is a smoke run of the same code with small counts.
Figures are for comparison within one run on one machine; the ratios (hook / discovery, ZEN / ours) are computed
within one run for that reason. Sections not run keep their last figures in results.json, marked with the time they
were taken.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import sys
import time

from bench.common import RESULTS, ROOT, load_results, save_results

DEFAULT = ("engine", "stages", "startup", "scaling", "service", "openloop", "cpu", "zen")
ALL = DEFAULT + ("soak",)
_MODULES = {"engine": "evaluation"}  # a section whose module has another name

# The service's targets: (name, section, how to read the figure, limit, unit). A figure measured for each protocol is
# read as the worst of them: every served protocol has to meet the target.
TARGETS = (
    ("order-sign p99 at 10 clients", "service", lambda r: _worst_endpoint(r, "p99_ms"), 20.0, "ms"),
    ("order-sign p50 / discovery p50 at 10 clients", "service",
     lambda r: _worst_endpoint(r, "p50_over_discovery"), 3.0, "x"),
    ("load + compile all versions", "startup", lambda r: r["load_and_compile_s"], 1.0, "s"),
    ("worker RSS growth over the soak", "soak", lambda r: r["max_growth_mb"], 5.0, "MB"),
    ("cost at 1,000 / at 100 results of a history", "scaling",
     lambda r: _worst(row["growth"]["history_1000_over_100"] for row in r.get("rulesets", {}).values()), 10.0, "x"),
    ("open-loop order-sign p99 at 200/s, SQLite", "openloop", lambda r: _open_loop_p99(r, "sqlite", "200"), 20.0, "ms"),
    ("open-loop order-sign p99 at 200/s, PostgreSQL", "openloop",
     lambda r: _open_loop_p99(r, "postgresql", "200"), 30.0, "ms"),
    ("order-sign CPU per call / discovery's", "cpu", lambda r: r.get("worst_order_sign_over_discovery"), 2.5, "x"),
    ("ZEN decisions/s / ours", "zen", lambda r: r.get("zen_over_ours", {}).get("decisions"), 1.0, "x"),
    ("ZEN extraction + decisions/s / ours", "zen",
     lambda r: r.get("zen_over_ours", {}).get("extraction_and_decisions"), 1.0, "x"),
)


def _worst(values) -> float | None:
    found = [v for v in values if v is not None]
    return max(found) if found else None


def _worst_endpoint(service: dict, key: str) -> float | None:
    """The worst figure of the order-sign services (one patient each) at 10 clients."""
    level = service.get("levels", {}).get("10", {})
    return _worst(row.get(key) for name, row in level.items() if name.endswith("-order-sign"))


def _open_loop_p99(openloop: dict, store: str, rate: str) -> float | None:
    """Order-sign p99 at one offered rate on one store (None when that store or rate was not measured)."""
    return openloop.get("stores", {}).get(store, {}).get("levels", {}).get(rate, {}).get("order-sign", {}).get("p99_ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"any of {', '.join(ALL)}, or all (default: {' '.join(DEFAULT)})")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run with small counts")
    parser.add_argument("--calls", type=int, help="soak: the number of order-sign calls (default 100,000)")
    parser.add_argument("--db", help="the server store URL (default: a fresh SQLite file), e.g. postgresql+psycopg://")
    args = parser.parse_args(argv)
    if args.db:
        os.environ["CDSRULES_BENCH_DB"] = args.db
    unknown = set(args.sections) - {*ALL, "all"}
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}, all")
    sections = ALL if "all" in args.sections else tuple(args.sections) or DEFAULT

    results = load_results()
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform(), "load_average": os.getloadavg(),
                          "store": "postgresql" if (args.db or "").startswith("postgres") else "sqlite"}
    for section in sections:
        started = time.perf_counter()
        print(f"[bench] {section}{' (quick)' if args.quick else ''} ...", file=sys.stderr, flush=True)
        figures = _run(section, args)
        figures["taken_at"] = dt.datetime.now().isoformat(timespec="seconds")
        figures["quick"] = args.quick
        figures["seconds"] = round(time.perf_counter() - started, 1)
        results[section] = figures
    results["targets"] = _targets(results)
    save_results(results)
    print(render(results, sections))
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


def _run(section: str, args) -> dict:
    """A section's results, from its module (imported only when it runs: some load the whole service)."""
    module = importlib.import_module(f"bench.{_MODULES.get(section, section)}")
    return module.run(args.quick, args.calls) if section == "soak" else module.run(args.quick)


def _targets(results: dict) -> list[dict]:
    found = []
    for name, section, read, limit, unit in TARGETS:
        if section not in results:
            found.append({"target": name, "limit": limit, "unit": unit, "value": None, "met": None})
            continue
        value = read(results[section])
        found.append({"target": name, "limit": limit, "unit": unit, "value": value,
                      "met": None if value is None else value < limit, "taken_at": results[section].get("taken_at"),
                      "quick": results[section].get("quick")})
    return found


# --- the printed table ------------------------------------------------------------------------


def render(results: dict, sections: tuple[str, ...]) -> str:
    lines: list[str] = []
    if "engine" in sections:
        engine = results["engine"]
        extract = "; ".join(f"{i} p50 {e['p50_us']} us" for i, e in engine["extract_facts"].items())
        lines += [f"\nEngine (each ruleset on its cohort, or on its tests as data; facts extracted beforehand"
                  f"{': extract ' + extract if extract else ''})",
                  f"  {'ruleset':24} {'released':>8} {'data':>6} {'cases':>5} {'evals/s':>8} {'p50 us':>7} "
                  f"{'p99 us':>7} {'fired':>6}"]
        for row in engine["rulesets"]:
            lines.append(f"  {row['ruleset']:24} {'yes' if row['released'] else 'draft':>8} {row['data']:>6} "
                         f"{row['cases']:>5} {row['per_second']:>8} {row['p50_us']:>7} {row['p99_us']:>7} "
                         f"{row['rules_fired_mean']:>6}")
        lines += _skipped(engine)
    if "stages" in sections:
        s = results["stages"]
        lines.append(f"\nStages of one order-sign call, in one process (p50 us over {s['calls']} calls)")
        for ruleset_id, r in s["rulesets"].items():
            steps = "; ".join(f"{name} {us}" for name, us in r["steps_p50_us"].items())
            lines += [f"  {ruleset_id}: {steps}",
                      f"    sum {r['steps_sum_us']}; whole request via the Flask test client "
                      f"{r['whole_request_p50_us']} (Flask and the rest {r['flask_and_rest_us']}); discovery "
                      f"{r['discovery_p50_us']}"]
        lines += _skipped(s)
    if "startup" in sections:
        s = results["startup"]
        idle = ", ".join(f"{kb / 1024:.0f}" for kb in s["worker_rss_kb_idle"].values())
        lines += [f"\nStart-up ({', '.join(s['versions'])}; median of {s['runs']} fresh processes)",
                  f"  import {s['import_s']} s; load + validate {s['load_validate_s']} s; compile {s['compile_s']} s;"
                  f" load + compile {s['load_and_compile_s']} s",
                  f"  RSS after load {s['process_rss_kb_after_load'] / 1024:.0f} MB; gunicorn workers idle: {idle} MB"]
    if "scaling" in sections:
        s = results["scaling"]
        lines += [f"\nScaling (order-sign, whole request path in-process; history_limit {s['history_limit']} "
                  "per concept; history: results of the record's most repeated observation)",
                  f"  {'ruleset':24} {'input':26} {'request KB':>10} {'p50 ms':>8} {'p90 ms':>8}"]
        for ruleset_id, r in s["rulesets"].items():
            for key, label in (("drafts", "draft orders"), ("history", "results in history")):
                for n, row in r[key].items():
                    lines.append(f"  {ruleset_id:24} {n + ' ' + label:26} {row['request_kb']:>10} "
                                 f"{row['p50_ms']:>8} {row['p90_ms']:>8}")
            g = r["growth"]
            lines.append(f"  {ruleset_id:24} growth: 50/1 drafts {g['drafts_50_over_1']}x; 100/10 results "
                         f"{g['history_100_over_10']}x; 1000/100 results {g['history_1000_over_100']}x "
                         "(linear would be 10x)")
        lines += _skipped(s)
    if "service" in sections:
        s = results["service"]
        lines += [f"\nService (gunicorn, {s['workers']} workers, loopback; closed-loop clients, no think time)",
                  f"  {'clients':>7} {'endpoint':36} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
                  f"{'/disc p50':>9} {'by round':>11} {'cpu ms':>6} {'/disc cpu':>9} {'errors':>6}"]
        for clients, level in s["levels"].items():
            for name, row in level.items():
                ratio, cpu_ratio = row.get("p50_over_discovery"), row.get("cpu_over_discovery")
                rounds = row.get("p50_over_discovery_rounds")
                spread = f"{min(rounds)}-{max(rounds)}" if rounds else ""
                lines.append(f"  {clients:>7} {name:36} {row['rps']:>7} {row['p50_ms']:>7} {row['p90_ms']:>7} "
                             f"{row['p99_ms']:>7} {ratio if ratio is not None else '':>9} {spread:>11} "
                             f"{row.get('worker_cpu_ms', ''):>6} {cpu_ratio if cpu_ratio is not None else '':>9} "
                             f"{row['errors']:>6}")
        lines.append("  endpoints: service ids (<ruleset>-<hook>), one typical patient each; 'cohort': the whole "
                     "generated cohort in turn")
        lines.append("  by round: the lowest and highest /disc p50 of the rounds alone. cpu ms: CPU time of the "
                     "workers per request (user + system), which noise from other machines' tenants does not "
                     "inflate as it does latency")
        lines += _skipped(s)
    if "soak" in sections:
        s = results["soak"]
        if s.get("calls"):
            growth = ", ".join(f"{v} MB" for v in s["growth_mb"].values())
            steady = ", ".join(f"{v} MB" for v in s.get("steady_growth_mb", {}).values())
            lines += [f"\nSoak ({s['calls']} order-sign calls to {', '.join(s.get('services', []))}, "
                      f"{s['clients']} clients, {s['errors']} errors)",
                      f"  worker RSS growth after warm-up: {growth}; over the last 70% of calls: {steady}",
                      f"  p50 {s['latency']['p50_ms']} ms, p99 {s['latency']['p99_ms']} ms, "
                      f"{s['latency']['rps']} req/s"]
        else:
            lines.append("\nSoak: no served ruleset has request data")
        lines += _skipped(s)
    if "openloop" in sections:
        from bench.render_open import openloop_lines
        lines += openloop_lines(results["openloop"])
    if "cpu" in sections:
        from bench.render_open import cpu_lines
        lines += cpu_lines(results["cpu"])
    if "zen" in sections:
        from bench.render_open import zen_lines
        lines += zen_lines(results["zen"])
    lines += ["\nTargets"]
    for t in results["targets"]:
        state = "not measured" if t["met"] is None else ("met" if t["met"] else "MISSED")
        stale = "" if t["met"] is None or t.get("taken_at") is None else \
            f"  [{t['taken_at']}{', quick' if t.get('quick') else ''}]"
        value = "-" if t["value"] is None else f"{t['value']} {t['unit']}"
        lines.append(f"  {t['target']:46} {value:>10} < {t['limit']} {t['unit']:3} {state}{stale}")
    return "\n".join(lines)


def _skipped(section: dict) -> list[str]:
    return [f"  skipped {name}: {why}" for name, why in section.get("skipped", {}).items()]


if __name__ == "__main__":
    sys.exit(main())
