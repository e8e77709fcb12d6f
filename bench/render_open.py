"""The printed table's lines for the openloop, cpu and zen sections (`bench.__main__.render`)."""
from __future__ import annotations


def openloop_lines(s: dict) -> list[str]:
    lines = [f"\nOpen loop (gunicorn, Poisson arrivals at fixed offered rates, {s['seconds_per_rate']} s each; latency "
             f"from when each request was due; order-sign: the cohort mix of {', '.join(s['rulesets']) or 'none'})",
             f"  {'store':10} {'offered':>7} {'endpoint':18} {'achieved':>8} {'p50 ms':>7} {'p99 ms':>7} "
             f"{'>' + format(s['slow_ms'], 'g') + ' ms':>7} {'lag p99':>7} {'errors':>6}"]
    for store, figures in s["stores"].items():
        if "skipped" in figures:
            lines.append(f"  {store:10} skipped: {figures['skipped']}")
            continue
        for rate, level in figures["levels"].items():
            for name, row in level.items():
                if "skipped" in row:
                    lines.append(f"  {store:10} {rate:>7} {name:18} {row['skipped']}")
                    continue
                share = "" if row["over_100ms_share"] is None else f"{100 * row['over_100ms_share']:.1f}%"
                lines.append(f"  {store:10} {rate:>7} {name:18} {row['achieved_rps']:>8} {row['p50_ms']:>7} "
                             f"{row['p99_ms']:>7} {share:>7} {row.get('send_lag_p99_ms', ''):>7} "
                             f"{row['errors']:>6}")
    lines.append("  lag p99: how late the client itself sent (it shares the machine with the server); httperf: "
                 "one connection per request, p50/p99 to its 1 ms histogram's bin edge")
    return lines + _skipped(s)


def cpu_lines(s: dict) -> list[str]:
    if "per_call" not in s:
        return ["\nCPU per call: no served ruleset has request data"] + _skipped(s)
    lines = [f"\nCPU per call (gunicorn workers' user + system time over {s['calls']} calls each, open loop)",
             f"  {'endpoint':36} {'cpu ms':>7} {'/disc':>6} {'errors':>6}  each round's /disc"]
    for name, row in s["per_call"].items():
        first = name == "discovery"
        ratio = "" if first or row["over_discovery"] is None else row["over_discovery"]
        rounds = "" if first else " ".join(f"{r:g}" for r in row.get("over_discovery_rounds", []))
        lines.append(f"  {name:36} {row['cpu_ms']:>7} {ratio:>6} {row['errors']:>6}  {rounds}")
    steps = ", ".join(f"{step['rate']:g}/s p99 {step['p99_ms']} ms {'held' if step['held'] else 'passed'}"
                      for step in s["search"])
    lines += [f"  sustainable order-sign cohort rate before p99 passes {s['p99_limit_ms']:g} ms: "
              f"{s['sustainable_rps'] or 'none'}/s on {s['cores']} cores "
              f"({s['sustainable_rps_per_core'] or '-'}/s per core)",
              f"  search: {steps}"]
    return lines + _skipped(s)


def zen_lines(s: dict) -> list[str]:
    if not s.get("rulesets"):
        return ["\nOur engine beside ZEN: no served ruleset has a cohort"] + _skipped(s)
    lines = [f"\nOur engine beside GoRules ZEN {s['zen_version']} (each ruleset's version in effect, on its cohort "
             f"cases x {s['rounds']}; one process; ZEN's graph generated from the ruleset)",
             f"  {'ruleset':24} {'engine':6} {'decisions/s':>11} {'p50 us':>7} {'extract+decide/s':>16} {'p50 us':>7}"]
    for ruleset_id, r in s["rulesets"].items():
        for name, row in r["engines"].items():
            whole = row.get("extraction_and_decisions", {})
            lines.append(f"  {r['ruleset']:24} {name:6} {row['decisions']['per_second']:>11} "
                         f"{row['decisions']['p50_us']:>7} {whole.get('per_second', '-'):>16} "
                         f"{whole.get('p50_us', '-'):>7}")
        for key, label in (("agreement", "our extraction's facts"), ("agreement_plain_extraction",
                                                                      "the plain extraction's facts")):
            agree = r[key]
            differ = "; ".join(agree["differ"][:3])
            lines.append(f"  {ruleset_id:24} same topics as ours on {agree['same']} of {agree['cases']} cases with "
                         f"{label}{': ' + differ if differ else ''}")
    lines += [f"  translated: {s['translated']}",
              "  ZEN's extraction: bench.plain_extract (the site mapping's codes and units, latest value, no reasons, "
              "no bounded values)"]
    return lines + _skipped(s)


def _skipped(section: dict) -> list[str]:
    return [f"  skipped {name}: {why}" for name, why in section.get("skipped", {}).items()]
