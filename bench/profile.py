"""`python -m bench.profile [HOOK] [RULESET]` (`make profile`): where a gunicorn worker spends its time under load.

Starts the real server as the service section does, drives HOOK (order-sign, patient-view or discovery) of RULESET
(default: the first served ruleset with request data, see `bench.protocols`) from 10 clients, and samples every worker
with py-spy for the duration. `python -m bench.profile openloop [RATE]` sends the open-loop section's cohort
order-sign mix instead, at RATE requests a second (default 200) with Poisson arrivals. Prints the functions the
workers were in most and writes all stacks, collapsed, to bench/profile-HOOK.txt (open it in speedscope or any flame
graph tool). py-spy attaches with ptrace: run as root, or
give the process CAP_SYS_PTRACE (in a container, `--cap-add SYS_PTRACE`).
"""
from __future__ import annotations

import collections
import datetime as dt
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import arrivals, load, openloop, protocols
from bench.common import ROOT, BodyTemplate, Server, hook_body
from bench.service import HOOKS

SECONDS = 10
OPEN_LOOP_RATE = 200
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*):\d+\)$")


def main(argv: list[str]) -> int:
    hook = argv[0] if argv else "order-sign"
    if hook == "openloop":
        return _report(_profile_open_loop(float(argv[1]) if len(argv) > 1 else OPEN_LOOP_RATE), hook)
    measured = protocols.with_cohort()
    ruleset_id = argv[1] if len(argv) > 1 else next(iter(measured), None)
    if hook != "discovery" and (hook not in HOOKS or ruleset_id not in measured):
        print(f"usage: python -m bench.profile [{' | '.join([*HOOKS, 'discovery'])}] [{' | '.join(measured)}]",
              file=sys.stderr)
        return 2
    target = load.Target("discovery", "/cds-services") if hook == "discovery" else \
        load.Target(hook, protocols.service_path(ruleset_id, hook),
                    BodyTemplate(hook_body(ruleset_id, hook, dt.date.today())).render)
    folder = Path(tempfile.mkdtemp(prefix="cdsrules-profile-"))
    with Server() as server:
        load.run(server.base_url, target, 4, 200)  # warm-up
        samplers = [_sample(pid, folder / f"{pid}.txt") for pid in server.worker_pids()]
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            load.run(server.base_url, target, 10, 500)
        for sampler in samplers:
            sampler.wait()
    return _report(_stacks(folder), hook)


def _profile_open_loop(rate: float) -> list[str]:
    mix = openloop.order_sign_mix(dt.date.today())
    folder = Path(tempfile.mkdtemp(prefix="cdsrules-profile-"))
    with Server() as server:
        openloop.warm_up(server, [mix])
        samplers = [_sample(pid, folder / f"{pid}.txt") for pid in server.worker_pids()]
        outcome = arrivals.run(server.base_url, mix, rate, SECONDS)
        for sampler in samplers:
            sampler.wait()
    print(f"{mix.name} at {rate:g}/s: p50 {outcome['p50_ms']} ms, p99 {outcome['p99_ms']} ms, "
          f"{outcome['errors']} errors")
    return _stacks(folder)


def _stacks(folder: Path) -> list[str]:
    return [line for path in folder.glob("*.txt") for line in path.read_text().splitlines() if line.strip()]


def _report(stacks: list[str], hook: str) -> int:
    if not stacks:
        print("py-spy recorded nothing: it needs ptrace (root, or CAP_SYS_PTRACE)", file=sys.stderr)
        return 1
    collapsed = ROOT / "bench" / f"profile-{hook}.txt"
    collapsed.write_text("\n".join(stacks) + "\n")
    print(_top(stacks))
    print(f"wrote {collapsed.relative_to(ROOT)} (collapsed stacks of every worker)")
    return 0


def _py_spy() -> str:
    return str(Path(sys.executable).parent / "py-spy")


def _sample(pid: int, output: Path) -> subprocess.Popen:
    return subprocess.Popen([_py_spy(), "record", "-p", str(pid), "-d", str(SECONDS), "-r", "500", "-f", "raw",
                             "-o", str(output), "--nonblocking"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _top(stacks: list[str], count: int = 25) -> str:
    """The innermost frames by share of samples (time waiting for a request is left out)."""
    innermost: collections.Counter[str] = collections.Counter()
    total = 0
    for line in stacks:
        stack, samples = line.rsplit(" ", 1)
        if "handle_request" not in stack:
            continue  # the worker's main loop, waiting for a connection
        match = _FRAME.match(stack.split(";")[-1])
        where = f"{match['function']} ({_short(match['file'])})" if match else stack.split(";")[-1]
        innermost[where] += int(samples)
        total += int(samples)
    lines = [f"{100 * n / total:5.1f}%  {where}" for where, n in innermost.most_common(count)]
    return f"{total} samples while answering requests; innermost frames:\n" + "\n".join(lines)


def _short(path: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
