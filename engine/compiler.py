"""Model -> durable-rules JSON. One small function per operator; compiled once per ruleset version.

Rules are stratified (analysis.compute_strata): a rule runs only after every rule that sets a fact it reads.
The runtime asserts one document of facts per stratum, and each rule's pattern matches only its own
stratum's document, so every rule sees complete facts and fires at most once per evaluation.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .analysis import compute_strata, condition_leaves
from .expressions import Expression, parse_expression
from .model import AllOf, AnyOf, Compare, Condition, Exists, FactRef, Missing, Not, Operand, ParamRef, Rule, Ruleset

EPOCH = dt.date(1970, 1, 1)

# The core keeps one fixed array of operators per pattern (MAX_SEQUENCE_EXPRESSIONS = 32 in rete.h) and refuses a
# pattern that fills it (error 113): each "$and"/"$or" takes two entries, its start and its end. A comparison within
# the one pattern a rule has is an alpha node and takes none.
CORE_PATTERN_ENTRIES = 31

_COMPARATORS = {"ne": "$neq", "gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte"}
_NEGATED = {"eq": "ne", "ne": "eq", "gt": "lte", "gte": "lt", "lt": "gte", "lte": "gt"}


# Values the engine takes as they are: these exact types, not subclasses (a bounded value is one); floats are not
# among them, as they may need rewriting (below).
_ENGINE_AS_IS = frozenset({bool, int, str, type(None)})


def to_engine_value(value: Any) -> Any:
    """Dates travel through the engine as day numbers so that gt/lt compare them.

    durable-rules' JSON reader rejects numbers in exponent form (1e-05, 1e+20), which Python writes for very small
    and very large floats: those are sent as fixed-point values at 1e-4 resolution, or as integers."""
    if type(value) in _ENGINE_AS_IS:  # most facts: one set lookup rather than the tests below
        return value
    if isinstance(value, dt.date):
        return (value - EPOCH).days
    if isinstance(value, float) and "e" in repr(value):
        return int(value) if abs(value) >= 1 else round(value, 4)
    return value


@dataclass
class CompiledRuleset:
    ruleset: Ruleset
    engine_name: str  # registered once in durable-rules; content-addressed so a version is never replaced
    strata: dict[str, int]
    stratum_count: int
    expressions: dict[str, Expression]
    stratum_facts: list[frozenset[str]]  # per stratum, the facts its rules' patterns test: all a document needs
    leaves: dict[str, tuple[Compare | Exists | Missing, ...]]  # rule id -> the leaves of its condition, for the trace
    definition: dict[str, Any] = field(repr=False, default_factory=dict)
    rule_order: dict[str, int] = field(default_factory=dict)  # rule id -> its place in the file (trace order)
    param_values: dict[str, Any] = field(default_factory=dict)  # parameter name -> value, as expressions see them
    rules: dict[str, Rule] = field(default_factory=dict)  # rule id -> rule: the core names the rule it matched


def engine_name(ruleset: Ruleset) -> str:
    """Content-addressed: the same text is registered once; a changed text never replaces a registered one."""
    return f"{ruleset.ref}#{hashlib.sha256(ruleset.source_text.encode()).hexdigest()[:12]}"


def compile_ruleset(ruleset: Ruleset, on_fire: Callable[[Rule], Callable[..., None]]) -> CompiledRuleset:
    """Build the durable-rules definition; on_fire(rule) returns the action callable for that rule."""
    strata = compute_strata(ruleset)
    definition: dict[str, Any] = {}
    for rule in ruleset.rules:
        definition[rule.id] = {"all": [{"m": rule_pattern(rule, strata[rule.id], ruleset)}], "run": on_fire(rule)}
    expressions = {d.source: parse_expression(d.source)
                   for rule in ruleset.rules for d in rule.derive if d.kind == "expr"}
    count = max(strata.values(), default=-1) + 1
    leaves = {rule.id: tuple(condition_leaves(rule.when)) for rule in ruleset.rules}
    stratum_facts = [frozenset().union(*(_tested_facts(leaves[r.id]) for r in ruleset.rules if strata[r.id] == k))
                     for k in range(count)]
    return CompiledRuleset(ruleset=ruleset, engine_name=engine_name(ruleset), strata=strata,
                           stratum_count=count, expressions=expressions, stratum_facts=stratum_facts,
                           leaves=leaves, definition=definition,
                           rule_order={rule.id: i for i, rule in enumerate(ruleset.rules)},
                           param_values={name: p.value for name, p in ruleset.parameters.items()},
                           rules={rule.id: rule for rule in ruleset.rules})


def rule_pattern(rule: Rule, stratum: int, ruleset: Ruleset) -> dict[str, Any]:
    """The rule's one pattern: its condition, on its own stratum's document."""
    return {"$and": [{"stratum": stratum}, compile_condition(rule.when, ruleset)]}


def core_pattern_entries(pattern: Any) -> int:
    """How many entries of the core's operator array `pattern` takes (at most CORE_PATTERN_ENTRIES)."""
    if isinstance(pattern, dict):
        groups = sum(2 for key in pattern if key in ("$and", "$or"))
        return groups + sum(core_pattern_entries(value) for value in pattern.values())
    if isinstance(pattern, list):
        return sum(core_pattern_entries(item) for item in pattern)
    return 0


def _tested_facts(leaves: Iterable[Compare | Exists | Missing]) -> frozenset[str]:
    names: set[str] = set()
    for leaf in leaves:
        names.add(leaf.fact)
        if isinstance(leaf, Compare):
            names.update(o.name for o in _operands(leaf) if isinstance(o, FactRef))
    return frozenset(names)


def compile_condition(condition: Condition, ruleset: Ruleset) -> dict[str, Any]:
    if isinstance(condition, AllOf):
        return {"$and": [compile_condition(c, ruleset) for c in condition.items]}
    if isinstance(condition, AnyOf):
        return {"$or": [compile_condition(c, ruleset) for c in condition.items]}
    if isinstance(condition, Not):
        return compile_condition(negate(condition.item), ruleset)
    if isinstance(condition, Exists):
        return {"$ex": {condition.fact: 1}}
    if isinstance(condition, Missing):
        return {"$nex": {condition.fact: 1}}
    return _compile_comparison(condition, ruleset)


def negate(condition: Condition) -> Condition:
    """Push 'not' down to the leaves. A comparison on a missing fact is false, so its negation is true:
    not(x > 3) means 'x is missing or x <= 3'."""
    if isinstance(condition, AllOf):
        return AnyOf(tuple(negate(c) for c in condition.items))
    if isinstance(condition, AnyOf):
        return AllOf(tuple(negate(c) for c in condition.items))
    if isinstance(condition, Not):
        return condition.item
    if isinstance(condition, Exists):
        return Missing(condition.fact)
    if isinstance(condition, Missing):
        return Exists(condition.fact)
    facts = [condition.fact] + [o.name for o in _operands(condition) if isinstance(o, FactRef)]
    absent = tuple(Missing(f) for f in facts)
    flipped: AllOf | Compare
    if condition.op == "in":
        flipped = AllOf(tuple(Compare(condition.fact, "ne", o) for o in _operands(condition)))
    else:
        flipped = Compare(condition.fact, _NEGATED[condition.op], condition.operand)
    return AnyOf(absent + (flipped,))


def _operands(comparison: Compare) -> tuple[Operand, ...]:
    return comparison.operand if isinstance(comparison.operand, tuple) else (comparison.operand,)


def _compile_operand(operand: Operand, fact: str, ruleset: Ruleset) -> Any:
    if isinstance(operand, ParamRef):
        return ruleset.param(operand.name)
    if isinstance(operand, FactRef):
        return {"$m": operand.name}
    value = operand.value
    if ruleset.facts.get(fact) is not None and ruleset.facts[fact].type == "date" and isinstance(value, str):
        return to_engine_value(dt.date.fromisoformat(value))
    return value


def _compile_comparison(condition: Compare, ruleset: Ruleset) -> dict[str, Any]:
    present: list[dict[str, Any]] = [{"$ex": {condition.fact: 1}}]
    present += [{"$ex": {o.name: 1}} for o in _operands(condition) if isinstance(o, FactRef)]
    if condition.op == "in":
        test: dict[str, Any] = {"$or": [{condition.fact: _compile_operand(o, condition.fact, ruleset)}
                                        for o in _operands(condition)]}
    else:
        assert not isinstance(condition.operand, tuple)  # only "in" has a tuple of operands (loader.build_condition)
        value = _compile_operand(condition.operand, condition.fact, ruleset)
        if condition.op == "eq":
            test = {condition.fact: value}
        else:
            test = {_COMPARATORS[condition.op]: {condition.fact: value}}
    # A comparison with a missing fact never holds: guard each side with "exists".
    return {"$and": present + [test]}
