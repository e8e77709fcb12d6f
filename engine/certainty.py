"""Deciding with facts the record gives only within bounds (engine.uncertain.Possible).

A child born in 2016-10 is under 18 whatever the day; a count written `<20` is below 50 whatever its value. So a
decision is made at every value a bounded fact may take that could change it, and where every one gives the same
decisions, that is the decision, its texts showing what the record said. Where they differ, the fact is treated as
missing, with a reason that says what the record gave and that the decision depends on it: never a guess.

The values tried: every one, for dates and whole numbers; for a number within bounds, its closed ends and, for each
threshold the rules compare it with directly (a condition's operand, a table band's edge), the threshold and a hair
either side. A number that also feeds a computation (an expression, a copy) cannot be bounded this way, and so is
missing when it is not exact.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from .analysis import condition_leaves
from .expressions import parse_expression
from .model import Compare, Decision, Evaluation, FactRef, ParamRef, Ruleset
from .runtime import clip_summary
from .templates import escape_markdown, format_number
from .uncertain import Possible, shown

T = TypeVar("T")

MAX_EVALUATIONS = 512  # beyond this, the bounded facts are treated as missing rather than tried one by one
# The card for a record too vague to decide on, where no rule of the protocol spoke: every protocol here declares a
# data-missing topic, and this is that situation.
UNDECIDED_TOPIC = "data-missing"
UNDECIDED_RULE = "_not_decided"
_HAIR = 1e-6


class Evaluator(Protocol):
    """An engine: this process's (engine.runtime.Engine) or the workbench's child (engine.sandbox.SandboxEngine)."""

    def evaluate(self, ruleset: Ruleset, facts: dict[str, Any], evaluation_date: dt.date | str,
                 hook: str | None = None, reasons: dict[str, str] | None = None) -> Evaluation: ...

    def each(self, function: Callable[..., T], rulesets: Sequence[Ruleset], items: Sequence[Any],
             doing: str) -> list[T]:
        """[function(engine, *rulesets, item) for item in items], where the engine evaluates."""
        ...


def evaluate_bounded(engine: Evaluator, ruleset: Ruleset, facts: dict[str, Any], possible: dict[str, Possible],
                     evaluation_date: dt.date | str, hook: str | None, reasons: dict[str, str]) -> Evaluation:
    """engine.evaluate, deciding for certain where bounded facts allow it, and saying why where they do not."""
    bounded = {name: p for name, p in possible.items()
               if name in ruleset.facts and not ruleset.facts[name].derived and facts.get(name) is None}
    if not bounded:
        return engine.evaluate(ruleset, facts, evaluation_date, hook, reasons)
    tried = {name: _values_to_try(ruleset, name, p) for name, p in bounded.items()}
    undecided = {name for name, values in tried.items() if values is None}
    decidable = {name: values for name, values in tried.items() if values is not None}
    if _combinations(decidable) > MAX_EVALUATIONS:
        # Too many to try: not decided, but the ends are still tried, so that an answer that reads the facts'
        # absence as one of their values is caught below rather than given as if nothing were uncertain.
        undecided |= set(decidable)
        decidable = {name: [values[0], values[-1]] if len(values) > 2 else values
                     for name, values in decidable.items()}
    results: list[Evaluation] = []
    if decidable:
        names = sorted(decidable)
        results = [engine.evaluate(ruleset, {**facts, **dict(zip(names, combo, strict=True))}, evaluation_date,
                                   hook, reasons)
                   for combo in itertools.product(*(decidable[n] for n in names))]
        if not undecided and all(_outcome(r) == _outcome(results[0]) for r in results):
            return results[0]
        undecided |= set(names)
    why = {**reasons, **{name: _undecided_reason(bounded[name]) for name in undecided}}
    decided_facts = {name: value for name, value in facts.items() if name not in undecided}
    without = engine.evaluate(ruleset, decided_facts, evaluation_date, hook, why)
    if results and any(_outcome(r) == _outcome(without) for r in results):
        # The rules read the fact's absence as one of its possible values ("no onset on record"): that would be
        # a guess, so the answer says what is undecided and suggests no order.
        return _not_decided(ruleset, without, results, [bounded[n] for n in sorted(undecided)])
    return without


def _values_to_try(ruleset: Ruleset, name: str, possible: Possible) -> list[Any] | None:
    """Each value wrapped to print as the record wrote it; None if the fact cannot be decided by trying values."""
    if not possible.is_interval:
        return [shown(v, possible.shown) for v in possible.values]
    thresholds = _thresholds(ruleset, name)
    if thresholds is None:
        return None
    low, high = _clipped(ruleset, name, possible)
    points = {p for t in thresholds for p in (t - _HAIR * max(1, abs(t)), t, t + _HAIR * max(1, abs(t)))}
    if low is not None and possible.low_closed:
        points.add(low)
    if high is not None and possible.high_closed:
        points.add(high)
    points.add(_beyond(low, high, thresholds, possible))
    inside = sorted(p for p in points if _within(p, low, high, possible))
    kind = ruleset.facts[name].type
    return [shown(int(p) if kind == "integer" else p, possible.shown) for p in inside
            if kind != "integer" or float(p).is_integer()] or None


def _thresholds(ruleset: Ruleset, name: str) -> set[float] | None:
    """Every number the rules compare `name` with directly; None if it also feeds a computation."""
    found: set[float] = set()
    for rule in ruleset.rules:
        for leaf in condition_leaves(rule.when):
            if not isinstance(leaf, Compare):
                continue
            operands = leaf.operand if isinstance(leaf.operand, tuple) else (leaf.operand,)
            if leaf.fact == name:
                for operand in operands:
                    if isinstance(operand, FactRef):
                        return None  # compared with another fact: its value is not known here
                    found.add(ruleset.param(operand.name) if isinstance(operand, ParamRef) else operand.value)
            elif any(isinstance(o, FactRef) and o.name == name for o in operands):
                return None
        for derivation in rule.derive:
            if derivation.kind == "table" and derivation.source[1] == name:
                table = ruleset.tables[derivation.source[0]]
                found.update(edge for band in table.bands for edge in (band.low, band.high) if edge is not None)
            elif derivation.kind == "fact" and derivation.source == name:
                return None
            elif derivation.kind == "expr" and name in parse_expression(derivation.source).names:
                return None
    return {float(t) for t in found if isinstance(t, (int, float)) and not isinstance(t, bool)}


def _clipped(ruleset: Ruleset, name: str, possible: Possible) -> tuple[float | None, float | None]:
    """The bounds within the fact's plausible range: '<20' for a count that cannot be negative is [0, 20)."""
    low, high = possible.low, possible.high
    plausible = ruleset.facts[name].plausible
    if plausible:
        low = plausible[0] if low is None else max(low, plausible[0])
        high = plausible[1] if high is None else min(high, plausible[1])
    return low, high


def _beyond(low: float | None, high: float | None, thresholds: set[float], possible: Possible) -> float:
    """One value past every threshold on an unbounded side (or inside a range with no threshold)."""
    if high is None:
        return max(thresholds | {low or 0.0}) + 1
    if low is None:
        return min(thresholds | {high}) - 1
    return (low + high) / 2


def _within(point: float, low: float | None, high: float | None, possible: Possible) -> bool:
    if low is not None and (point < low or (point == low and not possible.low_closed)):
        return False
    if high is not None and (point > high or (point == high and not possible.high_closed)):
        return False
    return True


def _combinations(values: dict[str, list[Any]]) -> int:
    count = 1
    for options in values.values():
        count *= len(options)
    return count


def _outcome(evaluation: Evaluation) -> list[tuple[Any, ...]]:
    """What a decision is: which rule decided what, and what order it suggests. Texts may differ by value."""
    return [(d.rule_id, d.topic, d.indicator,
             None if d.suggestion is None else (d.suggestion.action, d.suggestion.daily_dose, d.suggestion.order_id))
            for d in evaluation.decisions]


def _not_decided(ruleset: Ruleset, evaluation: Evaluation, results: list[Evaluation],
                 undecided: list[Possible]) -> Evaluation:
    fired = [set(r.fired_rules) for r in results]  # results is never empty here (see evaluate_bounded)
    contested = sorted(set.union(*fired) - fired[0].intersection(*fired[1:]))
    reasons = "; ".join(escape_markdown(_undecided_reason(p)) for p in undecided)  # they quote the record
    note = (f"**Not decided for certain:** {reasons}. "
            f"Rule(s) {', '.join(f'`{r}`' for r in contested)} hold for some of these values and not for others. "
            f"No order is suggested until the record is exact.")
    decisions = [dataclasses.replace(d, detail=f"{d.detail}\n\n{note}", suggestion=None)
                 for d in evaluation.decisions]
    if not decisions:
        decisions = [Decision(rule_id=UNDECIDED_RULE, topic=UNDECIDED_TOPIC, indicator="warning",
                              summary=clip_summary(f"{ruleset.title}: not decided, the record is not exact"),
                              detail=note)]
    return dataclasses.replace(evaluation, decisions=decisions)


def _undecided_reason(possible: Possible) -> str:
    if possible.is_interval:
        extent = possible.shown
    else:
        first, last = possible.values[0], possible.values[-1]
        extent = f"{_plain(first)} to {_plain(last)}" if len(possible.values) > 2 else \
            " or ".join(_plain(v) for v in possible.values)
    return f"{possible.why}: it may be {extent}, and the decision depends on which"


def _plain(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date) else format_number(value)
