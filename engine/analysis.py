"""What a ruleset's rules read and write, and the order that follows: a rule runs after every rule that sets a fact
it reads (its stratum). The checker reports cycles with it; the compiler orders and indexes rules by it.
"""
from __future__ import annotations

import graphlib
from collections.abc import Iterator

import jinja2

from .expressions import ExpressionError, parse_expression
from .model import AllOf, AnyOf, Compare, Condition, Derivation, Exists, FactRef, Missing, Not, Rule, Ruleset
from .templates import template_names


def condition_leaves(condition: Condition) -> Iterator[Compare | Exists | Missing]:
    """Every comparison, exists and missing in a condition tree."""
    if isinstance(condition, (AllOf, AnyOf)):
        for item in condition.items:
            yield from condition_leaves(item)
    elif isinstance(condition, Not):
        yield from condition_leaves(condition.item)
    else:
        yield condition


def reads_of(rule: Rule, ruleset: Ruleset) -> set[str]:
    """Facts a rule reads: in its condition, its derivations and its templates."""
    facts: set[str] = set()
    for leaf in condition_leaves(rule.when):
        facts.add(leaf.fact)
        operands = leaf.operand if isinstance(leaf, Compare) and isinstance(leaf.operand, tuple) else \
            (leaf.operand,) if isinstance(leaf, Compare) else ()
        facts.update(o.name for o in operands if isinstance(o, FactRef))
    for derivation in rule.derive + rule.append:
        facts.update(_derivation_reads(derivation, ruleset))
    # Texts and suggestions are rendered after the rule's own derivations, so they may read those.
    later: set[str] = set()
    for text in _templates_of(rule):
        try:
            later.update(n for n in template_names(text) if n in ruleset.facts)
        except jinja2.TemplateSyntaxError:
            pass
    if rule.decide and rule.decide.suggestion:
        later.update(f for f in (rule.decide.suggestion.dose_fact, rule.decide.suggestion.order_fact) if f)
    return facts | (later - {d.fact for d in rule.derive})


def _derivation_reads(derivation: Derivation, ruleset: Ruleset) -> set[str]:
    if derivation.kind == "expr":
        try:
            return {n for n in parse_expression(derivation.source).names if n not in ruleset.parameters}
        except ExpressionError:
            return set()
    if derivation.kind == "table":
        return {derivation.source[1]}
    if derivation.kind == "fact":
        return {derivation.source}
    if derivation.kind == "template":
        try:
            return {n for n in template_names(derivation.source) if n in ruleset.facts}
        except jinja2.TemplateSyntaxError:
            return set()
    return set()


def writes_of(rule: Rule) -> set[str]:
    return {d.fact for d in rule.derive + rule.append}


def _templates_of(rule: Rule) -> list[str]:
    texts = [d.source for d in rule.append]
    if rule.decide:
        texts += [rule.decide.summary, rule.decide.detail]
        if rule.decide.suggestion:
            texts.append(rule.decide.suggestion.label)
    return texts


class CycleError(ValueError):
    def __init__(self, rules: list[str]) -> None:
        super().__init__(" -> ".join(rules))
        self.rules = rules


def compute_strata(ruleset: Ruleset) -> dict[str, int]:
    """Each rule runs after every rule that sets a fact it reads; a cycle raises CycleError. Without recursion, so
    that a long chain of derivations is no deeper for Python than a short one."""
    writers: dict[str, list[str]] = {}
    for rule in ruleset.rules:
        for fact in writes_of(rule):
            writers.setdefault(fact, []).append(rule.id)
    needs = {rule.id: [w for fact in reads_of(rule, ruleset) for w in writers.get(fact, [])] for rule in ruleset.rules}
    try:
        order = list(graphlib.TopologicalSorter(needs).static_order())
    except graphlib.CycleError as exc:
        raise CycleError(list(reversed(exc.args[1]))) from None  # read as "this rule needs the next"
    strata: dict[str, int] = {}
    for rule_id in order:
        strata[rule_id] = max((strata[w] + 1 for w in needs[rule_id]), default=0)
    return strata
