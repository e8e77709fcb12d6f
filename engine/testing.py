"""Tests written as data beside the rules: given facts (or a FHIR bundle) and a date, expect facts and decisions."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EvaluationError
from .inputs import to_date
from .model import Evaluation, Ruleset
from .runtime import Engine

SITE_MAPPING = Path("site") / "fhir-r4.yaml"
# A bundle given in a test or on the command line is the patient's whole record: a type it lacks means "none".
WHOLE_RECORD = frozenset({"Patient", "Observation", "Condition", "Procedure", "MedicationRequest"})


@dataclass
class CaseResult:
    name: str
    differences: list[str] = field(default_factory=list)
    evaluation: Evaluation | None = None

    @property
    def passed(self) -> bool:
        return not self.differences


def run_tests(ruleset: Ruleset, engine: Engine | None = None) -> list[CaseResult]:
    engine = engine or Engine()
    return [run_case(ruleset, case, engine) for case in ruleset.tests]


def run_case(ruleset: Ruleset, case: dict, engine: Engine) -> CaseResult:
    result = CaseResult(case["name"])
    try:
        facts, reasons = case_facts(ruleset, case)
        result.evaluation = engine.evaluate(ruleset, facts, str(case["date"]), case.get("hook"), reasons)
    except (EvaluationError, OSError, ValueError) as exc:
        result.differences.append(f"evaluation failed: {exc}")
        return result
    expect = case.get("expect", {})
    result.differences += _fact_differences(expect, result.evaluation)
    if "decisions" in expect:
        result.differences += _decision_differences(expect["decisions"], result.evaluation)
    return result


def case_facts(ruleset: Ruleset, case: dict) -> tuple[dict[str, Any], dict[str, str]]:
    """The case's facts; a case given as FHIR is first run through the site mapping."""
    facts = dict(case.get("facts", {}))
    if "fhir" not in case:
        return facts, {}
    from . import fhir  # only cases written as FHIR need the mapping

    base = Path(ruleset.source_file).parent
    mapping = fhir.load_site_mapping(find_site_mapping(base))
    resources = fhir.resources_from(json.loads((base / case["fhir"]).read_text(encoding="utf-8")))
    drafts = None
    if "draft_orders" in case:
        drafts = fhir.resources_from(json.loads((base / case["draft_orders"]).read_text(encoding="utf-8")))
    extraction = fhir.extract_facts(mapping, resources, to_date("date", case["date"]), draft_orders=drafts,
                                    supplied=WHOLE_RECORD)
    return {**extraction.facts, **facts}, extraction.problems


def find_site_mapping(start: Path) -> Path:
    """The nearest rules directory above a ruleset file that holds site/fhir-r4.yaml."""
    for folder in [start, *start.parents]:
        if (folder / SITE_MAPPING).is_file():
            return folder / SITE_MAPPING
    raise OSError(f"no {SITE_MAPPING} found above {start}")


def _same(expected: Any, got: Any) -> bool:
    if isinstance(expected, (int, float)) and isinstance(got, (int, float)) and not isinstance(expected, bool):
        return abs(expected - got) < 1e-9
    if hasattr(expected, "isoformat"):
        expected = expected.isoformat()
    return expected == got


def _fact_differences(expect: dict, evaluation: Evaluation) -> list[str]:
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


def _decision_differences(expected: list[dict], evaluation: Evaluation) -> list[str]:
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
