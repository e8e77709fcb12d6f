"""Start-up: the time to load, validate and compile every rule version, in a fresh process as a worker does it,
and memory per worker (a fresh process after loading, and real gunicorn workers once started and warmed up).

Measured in a child interpreter so that nothing this process already imported or compiled is reused.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys

from bench.common import ROOT, RULES, Server

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from engine import fhir
from engine.runtime import Engine
from engine.versions import load_catalog
from webhook import create_app  # the whole service stack, as a worker imports it
t1 = time.perf_counter()
rules = sys.argv[1]
mapping = fhir.load_site_mapping(rules + "/site/fhir-r4.yaml")
catalog = load_catalog(rules)
t2 = time.perf_counter()
engine = Engine()
versions = [r for v in catalog.rulesets.values() for r in v.rulesets.values()]
for ruleset in versions:
    engine.register(ruleset)
t3 = time.perf_counter()
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
print(json.dumps({"import_s": t1 - t0, "load_validate_s": t2 - t1, "compile_s": t3 - t2,
                  "versions": [r.ref for r in versions], "rss_kb": rss}))
"""


def _once() -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(RULES)], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict:
    runs = [_once() for _ in range(2 if quick else 5)]
    median = lambda key: round(statistics.median(r[key] for r in runs), 3)  # noqa: E731
    result = {"versions": runs[0]["versions"], "runs": len(runs), "import_s": median("import_s"),
              "load_validate_s": median("load_validate_s"), "compile_s": median("compile_s"),
              "load_and_compile_s": round(statistics.median(r["load_validate_s"] + r["compile_s"] for r in runs), 3),
              "process_rss_kb_after_load": int(statistics.median(r["rss_kb"] for r in runs))}
    with Server() as server:
        result["worker_rss_kb_idle"] = server.worker_rss_kb()
    return result
