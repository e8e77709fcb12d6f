"""Rulesets and evaluations in plain language, for the pharmacist's terminal and review documents."""
from __future__ import annotations

from .model import (
    AllOf,
    AnyOf,
    Compare,
    Condition,
    Derivation,
    Evaluation,
    Exists,
    FactRef,
    Literal,
    Missing,
    Not,
    Operand,
    ParamRef,
    Ruleset,
)
from .templates import format_number

_WORDS = {"eq": "is", "ne": "is not", "gt": "is above", "gte": "is at least", "lt": "is below",
          "lte": "is at most", "in": "is one of"}


def describe_operand(operand: Operand | tuple[Operand, ...], ruleset: Ruleset) -> str:
    if isinstance(operand, ParamRef):
        parameter = ruleset.parameters.get(operand.name)
        value = f"{format_number(parameter.value)} {parameter.unit}".strip() if parameter else "?"
        return f"{value} ({operand.name})"
    if isinstance(operand, FactRef):
        return operand.name
    if isinstance(operand, Literal):
        return str(operand.value).lower() if isinstance(operand.value, bool) else format_number(operand.value)
    return ", ".join(describe_operand(o, ruleset) for o in operand)


def describe_condition(condition: Condition, ruleset: Ruleset, depth: int = 0) -> list[str]:
    pad = "  " * depth
    if isinstance(condition, (AllOf, AnyOf)):
        word = "all of" if isinstance(condition, AllOf) else "any of"
        lines = [f"{pad}{word}:"]
        for item in condition.items:
            lines += describe_condition(item, ruleset, depth + 1)
        return lines
    if isinstance(condition, Not):
        return [f"{pad}not:"] + describe_condition(condition.item, ruleset, depth + 1)
    if isinstance(condition, Exists):
        return [f"{pad}- {condition.fact} is known"]
    if isinstance(condition, Missing):
        return [f"{pad}- {condition.fact} is missing"]
    assert isinstance(condition, Compare)
    return [f"{pad}- {condition.fact} {_WORDS[condition.op]} {describe_operand(condition.operand, ruleset)}"]


def explain_ruleset(ruleset: Ruleset) -> str:
    protocol = ruleset.metadata.get("protocol", {})
    lines = [f"{ruleset.title} ({ruleset.ref})", ruleset.description.strip(),
             f"Protocol: {protocol.get('registry_id', '')} {protocol.get('url', '')}".rstrip(), "", "Parameters:"]
    for p in ruleset.parameters.values():
        lines.append(f"  {p.name} = {format_number(p.value)} {p.unit}  [{p.source}]  {p.description}")
    for table in ruleset.tables.values():
        lines += ["", f"Table {table.name}: {table.description}"]
        for band in table.bands:
            if isinstance(band.output, ParamRef):
                output = describe_operand(band.output, ruleset)
            else:
                output = f"{describe_operand(Literal(band.output), ruleset)} {table.output_unit}"
            lines.append(f"  {band.text:>16} {table.input_unit} -> {output}")
    lines += ["", "Rules:"]
    for rule in ruleset.rules:
        lines.append(f"  {rule.id}: {rule.explanation}")
        lines += ["    when " + line.lstrip() if i == 0 else "    " + line
                  for i, line in enumerate(describe_condition(rule.when, ruleset, 1))]
        for d in rule.derive:
            lines.append(f"    then {d.fact} = {_describe_derivation(d)}")
        for d in rule.append:
            lines.append(f"    then add to {d.fact}: \"{d.source.strip()}\"")
        if rule.decide:
            lines.append(f"    then card '{rule.decide.topic}' ({rule.decide.indicator})")
    return "\n".join(lines)


def _describe_derivation(d: Derivation) -> str:
    if d.kind == "table":
        return f"table {d.source[0]} looked up by {d.source[1]}"
    if d.kind == "param":
        return f"parameter {d.source}"
    return str(d.source).lower() if isinstance(d.source, bool) else str(d.source)


def format_evaluation(ruleset: Ruleset, evaluation: Evaluation) -> str:
    lines = [f"{ruleset.title} ({ruleset.ref}) on {evaluation.evaluation_date}", "", "Decisions:"]
    if not evaluation.decisions:
        lines.append("  none")
    for d in evaluation.decisions:
        lines.append(f"  [{d.indicator}] {d.topic}: {d.summary}  (rule {d.rule_id})")
        if d.suggestion:
            dose = "" if d.suggestion.daily_dose is None else f", {format_number(d.suggestion.daily_dose)}/day"
            lines.append(f"      suggestion: {d.suggestion.action} - {d.suggestion.label}{dose}")
        lines += ["      " + line for line in d.detail.splitlines() if line.strip()]
    lines += ["", "Trace (rules that fired, with the values they compared):"]
    for firing in evaluation.trace:
        lines.append(f"  {firing.rule_id}: {firing.explanation}")
        for c in firing.comparisons:
            threshold = "" if c.threshold is None else f" {c.threshold!r}" + (f" ({c.threshold_ref})"
                                                                             if c.threshold_ref else "")
            lines.append(f"      {c.fact} = {c.actual!r} {c.op}{threshold}")
        for name, value in firing.derived.items():
            lines.append(f"      => {name} = {value!r}")
    if evaluation.missing:
        lines += ["", "Missing or unusable inputs:"]
        lines += [f"  {name}: {reason}" for name, reason in sorted(evaluation.missing.items())
                  if reason != "no value"]
        absent = sorted(n for n, r in evaluation.missing.items() if r == "no value")
        if absent:
            lines.append("  no value: " + ", ".join(absent))
    return "\n".join(lines)
