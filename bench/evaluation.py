"""Engine: evaluations per second and p50/p99 microseconds for every ruleset version, in one process.

Each version is evaluated on its own protocol's data (`bench.protocols`): the ruleset's generated cohort when it
has a scenario file (each patient at each of its evaluation dates: several days of therapy, alternately as
patient-view and order-sign), else the facts of its tests written as data (each case on its date, for its hook).
Facts are extracted from the record as it stood on that date before the clock starts, so the figures are the
engine's alone; the extraction is timed separately. Every version file is measured (drafts too: a draft is what
will be released); a ruleset with neither a cohort nor tests is named as skipped.
"""
from __future__ import annotations

import datetime as dt
import time

from bench import protocols
from bench.common import RULES, percentile
from engine import fhir
from engine.fhir import resources_as_of
from engine.inputs import to_date
from engine.model import Ruleset
from engine.runtime import Engine
from engine.testing import case_facts

HOOKS = ("patient-view", "order-sign")

Case = tuple[dict, dict, dt.date, str]  # facts, the reasons some are missing, date, hook


def cohort_cases(ruleset_id: str, patients: int) -> tuple[list[Case], list[float]]:
    """Every cohort patient on every evaluation date, and the extraction times."""
    mapping = fhir.load_site_mapping(RULES / "site" / "fhir-r4.yaml")
    found, extract_us = [], []
    for patient in protocols.cohort(ruleset_id, patients):
        for day in patient.evaluation_dates:
            resources = resources_as_of(patient.resources, day)
            started = time.perf_counter_ns()
            extraction = fhir.extract_facts(mapping, resources, day)
            extract_us.append((time.perf_counter_ns() - started) / 1000)
            found.append((extraction.facts, extraction.problems, day, HOOKS[len(found) % len(HOOKS)]))
    return found, extract_us


def written_cases(ruleset: Ruleset) -> list[Case]:
    """The version's tests written as data, each as the facts it gives."""
    found = []
    for case in ruleset.tests:
        extraction = case_facts(ruleset, case)
        found.append((extraction.facts, extraction.problems, to_date("date", case["date"]),
                      case.get("hook") or HOOKS[0]))
    return found


def run(quick: bool = False) -> dict:
    patients, rounds = (12, 1) if quick else (48, 3)
    engine, rows, extract, skipped = Engine(), [], {}, {}
    catalog = protocols.catalog()
    for ruleset_id, versions in sorted(catalog.rulesets.items()):
        cohort = None
        if protocols.scenario_file(ruleset_id) is not None:
            cohort, extract_us = cohort_cases(ruleset_id, patients)
            extract_us.sort()
            extract[ruleset_id] = {"p50_us": round(percentile(extract_us, 0.5)),
                                   "p99_us": round(percentile(extract_us, 0.99))}
        for version, ruleset in sorted(versions.rulesets.items()):
            evaluations, data = (cohort, "cohort") if cohort is not None else (written_cases(ruleset), "tests")
            if not evaluations:
                skipped[ruleset.ref] = "no scenario file and no tests written as data"
                continue
            rows.append({"ruleset": ruleset.ref, "released": version in versions.releases, "data": data,
                         **_measure(engine, ruleset, evaluations, rounds)})
    return {"rulesets": rows, "extract_facts": extract, "skipped": skipped}


def _measure(engine: Engine, ruleset: Ruleset, evaluations: list[Case], rounds: int) -> dict:
    for facts, problems, day, hook in evaluations[:5]:  # warm-up: compile, first-call caches
        engine.evaluate(ruleset, dict(facts), day, hook=hook, reasons=dict(problems))
    timings, fired = [], 0
    started = time.perf_counter()
    for _ in range(rounds):
        for facts, problems, day, hook in evaluations:
            t0 = time.perf_counter_ns()
            result = engine.evaluate(ruleset, dict(facts), day, hook=hook, reasons=dict(problems))
            timings.append((time.perf_counter_ns() - t0) / 1000)
            fired += len(result.trace)
    elapsed = time.perf_counter() - started
    timings.sort()
    return {"cases": len(evaluations), "evaluations": len(timings), "per_second": round(len(timings) / elapsed),
            "p50_us": round(percentile(timings, 0.5)), "p99_us": round(percentile(timings, 0.99)),
            "rules_fired_mean": round(fired / len(timings), 1)}
