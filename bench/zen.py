"""ZEN: our engine beside GoRules ZEN (`zen-engine`) on the same decisions (`python -m bench zen`).

For each served ruleset with a cohort, the peer's graph is generated from the version in effect today
(`bench.zen_graph`), and both engines are given every cohort case (each patient on each evaluation date, the
record as it stood then, alternately as patient-view and order-sign, as the engine section does). First the
check that they agree: the same topics, case by case (a difference is listed, never hidden). Then evaluations per
second, in one process, in the same run:

- decisions only: the facts extracted beforehand (ours: `engine.decide.decide` on the extraction; ZEN: the same
  facts as ZEN's input, dates as day numbers);
- extraction plus decisions: ours through `engine.fhir` (the site mapping) and then the engine; ZEN with what a
  ZEN user would write instead of our extraction: a plain extraction of the same facts from the FHIR resources
  (`bench.plain_extract`), and then the graph.
"""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import time
from dataclasses import dataclass
from typing import Any

from bench import plain_extract, protocols
from bench.common import RULES, percentile
from bench.zen_graph import day_number, graph
from engine import fhir
from engine.decide import decide
from engine.fhir import resources_as_of
from engine.inputs import to_date
from engine.runtime import Engine

HOOKS = ("patient-view", "order-sign")


def zen_input(ruleset, facts: dict[str, Any], day: dt.date, hook: str) -> dict[str, Any]:
    """The facts as ZEN's JSON input: dates (by the ruleset's fact types) as day numbers, bounded values as the
    number the record wrote."""
    found: dict[str, Any] = {"today": day_number(day), "hook": hook}
    for name, value in facts.items():
        spec = ruleset.facts.get(name)
        if spec is None or value is None:
            continue
        if spec.type == "date":
            found[name] = day_number(to_date(name, value))
        elif spec.type in ("integer", "number") and not isinstance(value, bool):
            found[name] = int(value) if spec.type == "integer" else float(value)  # a bounded value as written
        else:
            found[name] = value
    return found


def zen_topics(answer: dict) -> list[str]:
    return [row["topic"] for row in answer["result"]["topics"]]


def cases(ruleset_id: str, patients: int) -> list[tuple[list[dict], dt.date, str]]:
    found = []
    for patient in protocols.cohort(ruleset_id, patients):
        for day in patient.evaluation_dates:
            found.append((resources_as_of(patient.resources, day), day, HOOKS[len(found) % len(HOOKS)]))
    return found


def run(quick: bool = False) -> dict:
    patients, rounds = (12, 1) if quick else (48, 3)
    found: dict = {"zen_version": importlib.metadata.version("zen-engine"), "rounds": rounds, "rulesets": {},
                   "skipped": protocols.skipped(),
                   "translated": "every rule: screening of the inputs, derived facts, appended lists (as rule ids), "
                                 "decisions (topics); not card texts, suggestions or bounded values"}
    for ruleset_id in protocols.with_cohort():
        found["rulesets"][ruleset_id] = _run_one(ruleset_id, patients, rounds)
    rows = found["rulesets"].values()
    found["zen_over_ours"] = {kind: max((r["zen_over_ours"][kind] for r in rows if kind in r["zen_over_ours"]),
                                        default=None) for kind in ("decisions", "extraction_and_decisions")}
    return found


@dataclass
class Prepared:
    """One ruleset's graph, engines and cohort cases, each case's facts as both engines are given them, and our
    topics."""

    ruleset: Any
    decision: Any  # zen.ZenDecision
    engine: Engine
    mapping: Any
    chosen: list[tuple[list[dict], dt.date, str]]
    extracted: list
    inputs: list[dict]  # our extraction's facts, as ZEN's input
    plain: list[dict]  # the plain extraction's facts, as ZEN's input
    ours: list[list[str]]

    def agreement(self) -> dict:
        return {"agreement": _agreement(self.decision, self.ours, self.inputs, self.chosen),
                "agreement_plain_extraction": _agreement(self.decision, self.ours, self.plain, self.chosen)}


def prepare(ruleset_id: str, patients: int) -> Prepared:
    import zen

    ruleset = protocols.catalog().select(ruleset_id, dt.date.today())  # the version in effect
    mapping = fhir.load_site_mapping(RULES / "site" / "fhir-r4.yaml")
    decision = zen.ZenEngine().create_decision(json.dumps(graph(ruleset)))
    engine = Engine()
    chosen = cases(ruleset_id, patients)
    extracted = [fhir.extract_facts(mapping, resources, day) for resources, day, _ in chosen]
    inputs = [zen_input(ruleset, e.facts, day, hook) for e, (_, day, hook) in zip(extracted, chosen, strict=True)]
    plain = [zen_input(ruleset, plain_extract.extract(resources, day), day, hook) for resources, day, hook in chosen]
    ours = [sorted(decide(engine, ruleset, e, day, hook).topics()) for e, (_, day, hook) in zip(extracted, chosen,
                                                                                                strict=True)]
    return Prepared(ruleset, decision, engine, mapping, chosen, extracted, inputs, plain, ours)


def _run_one(ruleset_id: str, patients: int, rounds: int) -> dict:
    p = prepare(ruleset_id, patients)
    ruleset, decision, engine, mapping, chosen = p.ruleset, p.decision, p.engine, p.mapping, p.chosen
    extracted, inputs = p.extracted, p.inputs

    def ours_decisions(n: int) -> None:
        decide(engine, ruleset, extracted[n], chosen[n][1], chosen[n][2])

    def zen_decisions(n: int) -> None:
        decision.evaluate(inputs[n])

    def ours_whole(n: int) -> None:
        resources, day, hook = chosen[n]
        decide(engine, ruleset, fhir.extract_facts(mapping, resources, day), day, hook)

    def zen_whole(n: int) -> None:
        resources, day, hook = chosen[n]
        decision.evaluate(zen_input(ruleset, plain_extract.extract(resources, day), day, hook))

    engines = {"ours": {"decisions": _rate(ours_decisions, len(chosen), rounds),
                        "extraction_and_decisions": _rate(ours_whole, len(chosen), rounds)},
               "ZEN": {"decisions": _rate(zen_decisions, len(chosen), rounds),
                       "extraction_and_decisions": _rate(zen_whole, len(chosen), rounds)}}
    return {"ruleset": ruleset.ref, "cases": len(chosen), "engines": engines, **p.agreement(),
            "zen_over_ours": _ratios(engines)}


def _agreement(decision, ours: list[list[str]], inputs: list[dict], chosen: list) -> dict:
    """Case by case, whether ZEN on `inputs` gives the topics our engine gave."""
    differ = []
    for n, (given, (_, day, hook)) in enumerate(zip(inputs, chosen, strict=True)):
        theirs = sorted(zen_topics(decision.evaluate(given)))
        if theirs != ours[n]:
            differ.append(f"case {n} ({day}, {hook}): ours {ours[n]}, ZEN {theirs}")
    return {"cases": len(inputs), "same": len(inputs) - len(differ), "differ": differ}


def _rate(call, count: int, rounds: int) -> dict:
    for n in range(min(5, count)):  # warm-up: compile, first-call caches
        call(n)
    timings = []
    started = time.perf_counter()
    for _ in range(rounds):
        for n in range(count):
            t0 = time.perf_counter_ns()
            call(n)
            timings.append((time.perf_counter_ns() - t0) / 1000)
    elapsed = time.perf_counter() - started
    timings.sort()
    return {"per_second": round(len(timings) / elapsed), "p50_us": round(percentile(timings, 0.5)),
            "p99_us": round(percentile(timings, 0.99))}


def _ratios(engines: dict) -> dict:
    found = {}
    for kind in ("decisions", "extraction_and_decisions"):
        if kind in engines["ZEN"] and kind in engines["ours"]:
            found[kind] = round(engines["ZEN"][kind]["per_second"] / engines["ours"][kind]["per_second"], 2)
    return found
