"""Discovery under httperf (Debian's open-loop load tool): a cross-check of `bench.arrivals` by another client.

httperf sends GETs at exponential inter-arrival times (`--period e<mean gap>`), one connection per request, and with
`-v -v` prints the connection lifetime histogram (1 ms bins) that p50 and p99 are read from, as the upper edge of the
bin they fall in. It cannot send the order-sign requests: its session log keeps a POST body in 10,000 bytes.
"""
from __future__ import annotations

import re
import shutil
import subprocess

PROGRAM = "httperf"
NOT_INSTALLED = "skipped: httperf not installed"
_BIN = re.compile(r"^\s+(\d+(?:\.\d+)?)\s+(\d+)\s*$")
_TOTAL = re.compile(r"Total: connections (\d+) requests (\d+) replies (\d+) test-duration ([\d.]+) s")
_STATUS = re.compile(r"Reply status: 1xx=(\d+) 2xx=(\d+) 3xx=(\d+) 4xx=(\d+) 5xx=(\d+)")
_ERRORS = re.compile(r"Errors: total (\d+)")


def installed() -> bool:
    return shutil.which(PROGRAM) is not None


def run(port: int, path: str, rate: float, seconds: float) -> dict:
    """GET `path` on loopback at `rate` per second (Poisson) for about `seconds`; p50, p99, achieved rate."""
    count = max(1, round(rate * seconds))
    command = [PROGRAM, "--server", "127.0.0.1", "--port", str(port), "--uri", path, "--period", f"e{1 / rate:.6f}",
               "--num-conns", str(count), "--num-calls", "1", "--timeout", "10", "-v", "-v"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds * 10 + 60)
    return parse(done.stdout)


def parse(output: str) -> dict:
    """The figures of one httperf run from its verbose output."""
    bins: list[tuple[float, int]] = []
    in_histogram = False
    for line in output.splitlines():
        if line.startswith("Connection lifetime histogram"):
            in_histogram = True
        elif in_histogram and (match := _BIN.match(line)):
            bins.append((float(match[1]) + 0.5, int(match[2])))  # the bin's upper edge, in ms
        elif in_histogram and line.strip() != ":":
            in_histogram = False
    total, status, errors = _TOTAL.search(output), _STATUS.search(output), _ERRORS.search(output)
    if not total or not status:
        raise RuntimeError(f"httperf printed no summary:\n{output[-2000:]}")
    replies, seconds = int(total[3]), float(total[4])
    counted = sum(n for _, n in bins)
    return {"requests": int(total[2]), "achieved_rps": round(replies / seconds, 1) if seconds else 0.0,
            "p50_ms": _quantile(bins, counted, 0.50), "p99_ms": _quantile(bins, counted, 0.99),
            "over_100ms_share": round(sum(n for edge, n in bins if edge > 100) / counted, 4) if counted else None,
            "errors": int(errors[1]) if errors else 0, "non_2xx": replies - int(status[2])}


def _quantile(bins: list[tuple[float, int]], counted: int, fraction: float) -> float | None:
    seen = 0
    for edge, n in bins:
        seen += n
        if seen >= fraction * counted:
            return edge
    return None
