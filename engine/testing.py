"""Tests written as data beside the rules: given facts (or a FHIR bundle) and a date, expect facts and decisions."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import fhir
from .certainty import Evaluator
from .decide import decide, facts_from_record, given_facts
from .errors import EvaluationError
from .fhir import Extraction
from .inputs import to_date
from .loader import find_site_mapping
from .model import Evaluation, Ruleset
from .runtime import Engine


@dataclass
class CaseResult:
    name: str
    differences: list[str] = field(default_factory=list)
    evaluation: Evaluation | None = None

    @property
    def passed(self) -> bool:
        return not self.differences


def run_tests(ruleset: Ruleset, engine: Evaluator | None = None) -> list[CaseResult]:
    """Every written case, run where the engine evaluates (the workbench's sandbox: in its child, many a call)."""
    engine = engine or Engine()
    return engine.each(_run_case_on, (ruleset,), ruleset.tests, doing=f"running the tests of {ruleset.ref}")


def _run_case_on(engine: Evaluator, ruleset: Ruleset, case: dict[str, Any]) -> CaseResult:
    return run_case(ruleset, case, engine)


def run_case(ruleset: Ruleset, case: dict[str, Any], engine: Evaluator) -> CaseResult:
    result = CaseResult(case["name"])
    try:
        result.evaluation = decide(engine, ruleset, case_facts(ruleset, case), str(case["date"]), case.get("hook"))
    except (EvaluationError, OSError, ValueError) as exc:
        result.differences.append(f"evaluation failed: {exc}")
        return result
    expect = case.get("expect", {})
    result.differences += _fact_differences(expect, result.evaluation)
    if "decisions" in expect:
        result.differences += _decision_differences(expect["decisions"], result.evaluation)
    return result


def case_facts(ruleset: Ruleset, case: dict[str, Any]) -> Extraction:
    """The case's facts; a case given as FHIR is first read through the site mapping, its own facts on top."""
    facts = dict(case.get("facts", {}))
    if "fhir" not in case:
        return given_facts(facts)
    base = Path(ruleset.source_file).parent
    mapping = fhir.load_site_mapping(find_site_mapping(base))
    drafts = _bundle(base / case["draft_orders"]) if "draft_orders" in case else None
    return facts_from_record(mapping, _bundle(base / case["fhir"]), to_date("date", case["date"]), drafts,
                             given=facts)


def _bundle(path: Path) -> list[dict[str, Any]]:
    return fhir.resources_from(json.loads(path.read_text(encoding="utf-8")))


def _same(expected: Any, got: Any) -> bool:
    if isinstance(expected, (int, float)) and isinstance(got, (int, float)) and not isinstance(expected, bool):
        return abs(expected - got) < 1e-9
    if hasattr(expected, "isoformat"):
        expected = expected.isoformat()
    return bool(expected == got)


def _fact_differences(expect: dict[str, Any], evaluation: Evaluation) -> list[str]:
    found = []
    for name, value in expect.get("facts", {}).items():
        got = evaluation.facts.get(name)
        if not _same(value, got):
            reason = f" ({evaluation.missing[name]})" if name in evaluation.missing else ""
            found.append(f"fact {name}: expected {value!r}, got {got!r}{reason}")
    for name in expect.get("absent_facts", []):
        if name in evaluation.facts:
            found.append(f"fact {name}: expected no value, got {evaluation.facts[name]!r}")
    return found


def _decision_differences(expected: list[dict[str, Any]], evaluation: Evaluation) -> list[str]:
    want, got = sorted(e["topic"] for e in expected), sorted(evaluation.topics())
    found = [] if want == got else [f"decisions: expected {want}, got {got}"]
    by_topic = {d.topic: d for d in evaluation.decisions}
    for item in expected:
        decision = by_topic.get(item["topic"])
        if decision is None:
            continue
        suggestion = decision.suggestion
        if "dose" in item:
            dose = suggestion.daily_dose if suggestion else None
            if not _same(item["dose"], dose):
                found.append(f"{item['topic']}: expected dose {item['dose']!r}, got {dose!r}")
        if "action" in item and (suggestion is None or suggestion.action != item["action"]):
            found.append(f"{item['topic']}: expected action {item['action']}, "
                         f"got {suggestion.action if suggestion else 'no suggestion'}")
        if "indicator" in item and decision.indicator != item["indicator"]:
            found.append(f"{item['topic']}: expected indicator {item['indicator']}, got {decision.indicator}")
        for text in item.get("detail_contains", []):
            if text not in decision.detail:
                found.append(f"{item['topic']}: detail does not contain {text!r}")
    return found
