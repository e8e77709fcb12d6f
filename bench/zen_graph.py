"""A ruleset written as a GoRules ZEN decision graph (JDM), generated from the parsed ruleset at run time.

The graph is bench data: it holds the protocol's thresholds only because they are read from the ruleset file here,
never written in the bench. Its shape is what a ZEN user would draw:

    input -> expression node "facts" -> decision table "topics" (collect hit policy) -> output

The expression node screens the input facts as `engine.inputs` does (implausible values, values older than their
window and dates after the evaluation date become null) and then computes every derived fact, rule by rule in the
engine's strata (`engine.analysis.compute_strata`): a fact several rules derive takes the value of the first of
them whose condition holds; an appended list holds the ids of the rules that appended to it (the card texts are
not decisions), and is null when empty, as our engine leaves it absent. The decision table has one row per rule
that decides, its condition written as a ZEN expression, and the topic as output.

Dates are whole days since 1970-01-01 (the input is given so), which makes `days_between` a subtraction.
Not translated: card texts, suggestions and bounded values (`engine.certainty`): a bounded value is given to ZEN
as the number the record wrote.
"""
from __future__ import annotations

import ast
import datetime as dt
import json
from typing import Any

from engine import model
from engine.analysis import compute_strata
from engine.expressions import parse_expression

EPOCH = dt.date(1970, 1, 1)
_OPERATORS = {"eq": "==", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Mod: "%"}


def day_number(value: dt.date) -> int:
    return (value - EPOCH).days


class _Writer:
    """ZEN expression text for one ruleset; `ref` names a fact as the node being written reads it."""

    def __init__(self, ruleset: model.Ruleset, in_node: bool):
        self.ruleset = ruleset
        self.in_node = in_node  # in the expression node, computed keys are read as $.name

    def ref(self, name: str) -> str:
        if name == "today" or name == "hook":
            return name
        return f"$.{name}" if self.in_node else name

    def literal(self, value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return repr(value)
        if isinstance(value, dt.date):
            return str(day_number(value))
        return json.dumps(str(value))

    def operand(self, operand) -> str:
        if isinstance(operand, model.Literal):
            return self.literal(operand.value)
        if isinstance(operand, model.ParamRef):
            return self.literal(self.ruleset.param(operand.name))
        if isinstance(operand, model.FactRef):
            return self.ref(operand.name)
        raise TypeError(f"unknown operand {operand!r}")

    def condition(self, when: model.Condition) -> str:
        if isinstance(when, model.Exists):
            return f"({self.ref(when.fact)} != null)"
        if isinstance(when, model.Missing):
            return f"({self.ref(when.fact)} == null)"
        if isinstance(when, model.AllOf):
            return "(" + " and ".join(self.condition(c) for c in when.items) + ")"
        if isinstance(when, model.AnyOf):
            return "(" + " or ".join(self.condition(c) for c in when.items) + ")"
        if isinstance(when, model.Not):
            return f"(not {self.condition(when.item)})"
        if isinstance(when, model.Compare):
            fact = self.ref(when.fact)
            guards = [f"{fact} != null"]
            if isinstance(when.operand, tuple):
                values = ", ".join(self.operand(o) for o in when.operand)
                return f"({fact} != null and {fact} in [{values}])"
            other = self.operand(when.operand)
            if isinstance(when.operand, model.FactRef):
                guards.append(f"{other} != null")
            return f"({' and '.join(guards)} and {fact} {_OPERATORS[when.op]} {other})"
        raise TypeError(f"unknown condition {when!r}")

    def expression(self, text: str) -> str:
        return self._node(parse_expression(text).tree.body)

    def _node(self, node: ast.AST) -> str:
        if isinstance(node, ast.Constant):
            return repr(node.value)
        if isinstance(node, ast.Name):
            if node.id in self.ruleset.parameters:
                return self.literal(self.ruleset.param(node.id))
            return self.ref(node.id)
        if isinstance(node, ast.UnaryOp):
            return f"(-{self._node(node.operand)})"
        if isinstance(node, ast.BinOp):
            return f"({self._node(node.left)} {_BINARY[type(node.op)]} {self._node(node.right)})"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = [self._node(a) for a in node.args]
            name = node.func.id
            if name == "days_between":
                return f"({args[1]} - {args[0]})"
            if name == "add_days":
                return f"({args[0]} + floor({args[1]}))"
            if name in ("min", "max"):
                return f"{name}([{', '.join(args)}])"
            if name in ("abs", "round"):
                return f"{name}({args[0]})"
        raise ValueError(f"no ZEN translation for {ast.unparse(node)}")

    def names(self, text: str) -> set[str]:
        return set(parse_expression(text).names)

    def band(self, band: model.Band, x: str) -> str:
        tests = []
        if band.low is not None:
            tests.append(f"{x} {'>=' if band.low_closed else '>'} {self.literal(band.low)}")
        if band.high is not None:
            tests.append(f"{x} {'<=' if band.high_closed else '<'} {self.literal(band.high)}")
        return " and ".join(tests) or "true"


def graph(ruleset: model.Ruleset) -> dict:
    """The ruleset's decisions as a JDM graph (a dict; `json.dumps` it for `zen.ZenEngine.create_decision`)."""
    node, table = _Writer(ruleset, in_node=True), _Writer(ruleset, in_node=False)
    expressions = _screened_inputs(ruleset, node) + _derivations(ruleset, node)
    rows = [{"_id": rule.id, "when": table.condition(rule.when), "topic": json.dumps(rule.decide.topic)}
            for rule in _in_order(ruleset) if rule.decide is not None]
    return {"nodes": [
        _node("input", "inputNode", "request"),
        _node("facts", "expressionNode", "facts",
              {"expressions": [{"id": key, "key": key, "value": value} for key, value in expressions],
               "passThrough": True, "inputField": None, "outputPath": None, "executionMode": "single"}),
        _node("topics", "decisionTableNode", "topics",
              {"hitPolicy": "collect", "inputs": [{"id": "when", "name": "rule condition", "field": ""}],
               "outputs": [{"id": "topic", "name": "topic", "field": "topic"}], "rules": rows,
               "passThrough": False, "inputField": None, "outputPath": "topics", "executionMode": "single"}),
        _node("output", "outputNode", "response")],
        "edges": [_edge("input", "facts"), _edge("facts", "topics"), _edge("topics", "output")]}


def _node(node_id: str, kind: str, name: str, content: dict | None = None) -> dict:
    found = {"id": node_id, "type": kind, "name": name, "position": {"x": 0, "y": 0}}
    if content is not None:
        found["content"] = content
    return found


def _edge(source: str, target: str) -> dict:
    return {"id": f"{source}-{target}", "sourceId": source, "targetId": target, "type": "edge"}


def _in_order(ruleset: model.Ruleset) -> list[model.Rule]:
    strata = compute_strata(ruleset)
    return sorted(ruleset.rules, key=lambda r: strata[r.id])  # sorted() is stable: file order within a stratum


def _screened_inputs(ruleset: model.Ruleset, w: _Writer) -> list[tuple[str, str]]:
    """Every input fact under its own key, null where `engine.inputs` would not use it."""
    found = []
    for name, spec in ruleset.facts.items():
        if spec.derived:
            continue
        x = name  # the input as given
        tests = []
        if spec.plausible:
            tests += [f"{x} >= {w.literal(spec.plausible[0])}", f"{x} <= {w.literal(spec.plausible[1])}"]
        if spec.type == "date":
            tests.append(f"{x} <= today")
        if spec.max_age_days is not None:
            observed, limit = spec.observed_on, w.literal(ruleset.param(spec.max_age_days))
            tests += [f"{observed} != null", f"today - {observed} <= {limit}", f"today - {observed} >= 0"]
        value = f"({x} != null and {' and '.join(tests)}) ? {x} : null" if tests else x
        found.append((name, value))
    return found


def _derivations(ruleset: model.Ruleset, w: _Writer) -> list[tuple[str, str]]:
    """Each derived fact once its writers' conditions can be read, in the engine's strata."""
    writers: dict[str, list[tuple[model.Rule, Any]]] = {}
    appenders: dict[str, list[model.Rule]] = {}
    order = _in_order(ruleset)
    for rule in order:
        for derivation in rule.derive:
            writers.setdefault(derivation.fact, []).append((rule, derivation))
        for derivation in rule.append:
            appenders.setdefault(derivation.fact, []).append(rule)
    found: list[tuple[str, str]] = []
    done: set[str] = set()
    for rule in order:
        key = _rule_key(rule)
        if rule.derive or rule.append:
            found.append((key, w.condition(rule.when)))
        for derivation in rule.derive:
            fact = derivation.fact
            last_writer = writers[fact][-1][0]
            if rule is last_writer and fact not in done:
                found.append((fact, _first_of(w, writers[fact])))
                done.add(fact)
        for derivation in rule.append:
            fact = derivation.fact
            if rule is appenders[fact][-1] and fact not in done:
                items = ", ".join(f"($.{_rule_key(r)} ? {json.dumps(r.id)} : null)" for r in appenders[fact])
                found += [(f"{fact}_all", f"filter([{items}], # != null)"),
                          (fact, f"len($.{fact}_all) > 0 ? $.{fact}_all : null")]
                done.add(fact)
    return found


def _first_of(w: _Writer, writers: list) -> str:
    """The value of the first writer whose condition holds, else null."""
    text = "null"
    for rule, derivation in reversed(writers):
        text = f"($.{_rule_key(rule)} ? {_value(w, derivation)} : {text})"
    return text


def _value(w: _Writer, derivation) -> str:
    kind, source = derivation.kind, derivation.source
    if kind == "value":
        return w.literal(source)
    if kind == "param":
        return w.literal(w.ruleset.param(source))
    if kind == "fact":
        return w.ref(source)
    if kind == "table":
        table_name, input_fact = source
        x = w.ref(input_fact)
        text = "null"
        for band in reversed(w.ruleset.tables[table_name].bands):
            output = band.output
            value = w.literal(w.ruleset.param(output.name) if isinstance(output, model.ParamRef) else output)
            text = f"({w.band(band, x)} ? {value} : {text})"
        return f"({x} == null ? null : {text})"
    if kind == "expr":
        names = sorted(w.names(source) - set(w.ruleset.parameters))
        present = " and ".join(f"{w.ref(n)} != null" for n in names) or "true"
        return f"(({present}) ? {w.expression(source)} : null)"
    raise ValueError(f"no ZEN translation for a '{kind}' derivation")


def _rule_key(rule: model.Rule) -> str:
    return "rule_" + rule.id.replace("-", "_")
