"""Engine: evaluations per second and p50/p99 microseconds over a generated cohort, in one process.

Each cohort patient is evaluated at each of its evaluation dates (several days of therapy). Facts are extracted
from the record as it stood on that date before the clock starts, so the figures are the engine's alone; the
extraction is timed separately. Every version file is measured (drafts too: a draft is what will be released).
"""
from __future__ import annotations

import time

from bench.common import RULES, percentile
from engine import fhir
from engine.cohort import DEFAULT_START, generate_cohort
from engine.fhir import resources_as_of
from engine.runtime import Engine
from engine.versions import load_catalog

HOOKS = ("patient-view", "order-sign")


def cases(patients: int) -> list[tuple]:
    """(facts, problems, date) for every patient on every evaluation date, and the extraction times."""
    mapping = fhir.load_site_mapping(RULES / "site" / "fhir-r4.yaml")
    found, extract_us = [], []
    for patient in generate_cohort(patients, 7, DEFAULT_START):
        for day in patient.evaluation_dates:
            resources = resources_as_of(patient.resources, day)
            started = time.perf_counter_ns()
            extraction = fhir.extract_facts(mapping, resources, day)
            extract_us.append((time.perf_counter_ns() - started) / 1000)
            found.append((extraction.facts, extraction.problems, day))
    return found, extract_us


def run(quick: bool = False) -> dict:
    evaluations, extract_us = cases(12 if quick else 48)
    rounds = 1 if quick else 3
    engine, rows = Engine(), []
    catalog = load_catalog(RULES)
    for versions in catalog.rulesets.values():
        for version, ruleset in sorted(versions.rulesets.items()):
            for facts, problems, day in evaluations[:5]:  # warm-up: compile, first-call caches
                engine.evaluate(ruleset, dict(facts), day, hook="patient-view", reasons=dict(problems))
            timings, fired = [], 0
            started = time.perf_counter()
            for n in range(rounds):
                for i, (facts, problems, day) in enumerate(evaluations):
                    hook = HOOKS[(i + n) % len(HOOKS)]
                    t0 = time.perf_counter_ns()
                    result = engine.evaluate(ruleset, dict(facts), day, hook=hook, reasons=dict(problems))
                    timings.append((time.perf_counter_ns() - t0) / 1000)
                    fired += len(result.trace)
            elapsed = time.perf_counter() - started
            timings.sort()
            rows.append({"ruleset": ruleset.ref, "released": version in versions.releases,
                         "evaluations": len(timings), "per_second": round(len(timings) / elapsed),
                         "p50_us": round(percentile(timings, 0.5)), "p99_us": round(percentile(timings, 0.99)),
                         "rules_fired_mean": round(fired / len(timings), 1)})
    extract_us.sort()
    return {"cohort_cases": len(evaluations), "rulesets": rows,
            "extract_facts": {"p50_us": round(percentile(extract_us, 0.5)),
                              "p99_us": round(percentile(extract_us, 0.99))}}
