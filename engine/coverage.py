"""What a version's written tests exercise: rules fired, decision-table rows hit, topics produced, conditions true.

Read from the evaluations the tests already make, never from inside the matcher: the trace names the rules that
fired and `Evaluation.bands` the table row each looked-up fact came from. Whether a part of a condition was ever
true is read from the evaluation's facts. That is what the rule saw: a rule runs only after every rule that sets a
fact it reads (its stratum), and a fact, once set, never changes within an evaluation.

A rule that cannot fire with the version's own parameter values (a site choice the file ships set the other way,
compared through a fact derived from the parameter) is listed as such and left out of the counts: no test case of
this version can reach it, and saying so is the honest report; a copy with the parameter changed tests it.

A threshold (percentages of rules fired, of table rows hit and of conditions ever true) is kept per ruleset in its
release manifest; when absent, every rule and every row must be covered.
"""
from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .explain import describe_operand
from .model import (
    AllOf,
    AnyOf,
    Compare,
    Condition,
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
from .testing import CaseResult

THRESHOLD_KEY = "coverage"  # the release manifest's key for the ruleset's threshold


# --- what the tests exercised ---------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    table: str
    band: str  # the interval as the ruleset writes it, e.g. "[50, 100)"
    line: int
    hit: bool


@dataclass(frozen=True)
class Part:
    """One part of a rule's condition: a leaf, or a branch of an `any`/`all`."""

    rule_id: str
    path: str  # where in the rule's `when`, e.g. "when.all[2].any[0]"
    text: str
    ever_true: bool
    reachable: bool = True  # False: never true with the version's parameter values (see unreachable_parts)


@dataclass
class Coverage:
    ref: str
    cases: int  # the cases that evaluated (a case whose evaluation failed exercises nothing)
    rules: dict[str, bool]  # rule id -> fired in some case, in file order; the rules that can fire only
    rows: list[Row]
    topics_possible: list[str]
    topics_produced: list[str]
    conditions: list[Part] = field(default_factory=list)
    unreachable_rules: list[str] = field(default_factory=list)  # cannot fire with the version's parameter values

    @property
    def uncovered_rules(self) -> list[str]:
        return [rule for rule, fired in self.rules.items() if not fired]

    @property
    def uncovered_rows(self) -> list[Row]:
        return [row for row in self.rows if not row.hit]

    @property
    def topics_missing(self) -> list[str]:
        return [topic for topic in self.topics_possible if topic not in self.topics_produced]

    @property
    def never_true(self) -> list[Part]:
        return [part for part in self.conditions if part.reachable and not part.ever_true]

    def counts(self) -> dict[str, tuple[int, int]]:
        """Kind -> (covered, total), for the kinds a threshold names."""
        return {"rules": (sum(self.rules.values()), len(self.rules)),
                "table_rows": (sum(row.hit for row in self.rows), len(self.rows)),
                "conditions": (sum(part.ever_true for part in self.conditions),
                               sum(part.reachable for part in self.conditions))}

    def percent(self, kind: str) -> float:
        covered, total = self.counts()[kind]
        return 100.0 if total == 0 else 100.0 * covered / total

    def as_dict(self) -> dict[str, Any]:
        counts = self.counts()
        return {
            "ruleset": self.ref, "cases": self.cases,
            "rules": {"covered": counts["rules"][0], "total": counts["rules"][1], "uncovered": self.uncovered_rules,
                      "unreachable": self.unreachable_rules},
            "table_rows": {"covered": counts["table_rows"][0], "total": counts["table_rows"][1],
                           "uncovered": [{"table": r.table, "band": r.band, "line": r.line}
                                         for r in self.uncovered_rows]},
            "topics": {"produced": self.topics_produced, "possible": self.topics_possible,
                       "missing": self.topics_missing},
            "conditions": {"ever_true": counts["conditions"][0], "total": counts["conditions"][1],
                           "never_true": [{"rule": p.rule_id, "path": p.path, "condition": p.text}
                                          for p in self.never_true],
                           "unreachable": [{"rule": p.rule_id, "path": p.path, "condition": p.text}
                                           for p in self.conditions if not p.reachable]},
        }


def coverage_of(ruleset: Ruleset, results: Iterable[CaseResult]) -> Coverage:
    """What the results of running the version's tests (engine.testing.run_tests) exercised."""
    evaluations = [r.evaluation for r in results if r.evaluation is not None]
    fired = {rule_id for e in evaluations for rule_id in e.fired_rules}
    hit = {(table, band) for e in evaluations for table, band in _rows_hit(ruleset, e)}
    produced = {topic for e in evaluations for topic in e.topics()}
    constants = constant_facts(ruleset)
    unreachable = [rule.id for rule in ruleset.rules if _never_true(ruleset, rule.when, constants)]
    possible = list(dict.fromkeys(rule.decide.topic for rule in ruleset.rules if rule.decide))
    parts = [Part(rule.id, path, text, any(holds(ruleset, condition, e.facts) for e in evaluations),
                  not _never_true(ruleset, condition, constants))
             for rule in ruleset.rules for path, condition, text in condition_parts(rule.when, ruleset)]
    return Coverage(
        ref=ruleset.ref, cases=len(evaluations), unreachable_rules=unreachable,
        rules={rule.id: rule.id in fired for rule in ruleset.rules if rule.id not in unreachable},
        rows=[Row(name, band.text, band.line, (name, band.text) in hit)
              for name, table in ruleset.tables.items() for band in table.bands],
        topics_possible=possible, topics_produced=[t for t in possible if t in produced]
        + sorted(produced - set(possible)), conditions=parts)


def _rows_hit(ruleset: Ruleset, evaluation: Evaluation) -> Iterator[tuple[str, str]]:
    """(table, band) of every table lookup made by a rule that fired, as `band.<fact>` records it."""
    by_id = {rule.id: rule for rule in ruleset.rules}
    for firing in evaluation.trace:
        for derivation in by_id[firing.rule_id].derive:
            if derivation.kind == "table" and derivation.fact in evaluation.bands:
                yield derivation.source[0], evaluation.bands[derivation.fact]


# --- what the version's parameters rule out --------------------------------------------------------


def constant_facts(ruleset: Ruleset) -> dict[str, list[Any]]:
    """Derived facts every derivation of which is a parameter or a literal: fact -> the values it can take."""
    values: dict[str, list[Any]] = {}
    varying: set[str] = set()
    for rule in ruleset.rules:
        for derivation in rule.derive:
            if derivation.kind == "param":
                values.setdefault(derivation.fact, []).append(ruleset.param(derivation.source))
            elif derivation.kind == "value":
                values.setdefault(derivation.fact, []).append(derivation.source)
            else:
                varying.add(derivation.fact)
        varying.update(derivation.fact for derivation in rule.append)
    return {fact: found for fact, found in values.items() if fact not in varying}


def _never_true(ruleset: Ruleset, condition: Condition, constants: dict[str, list[Any]]) -> bool:
    """Provably false whatever the facts, given the version's parameters; False when it cannot be shown."""
    if isinstance(condition, AllOf):
        return any(_never_true(ruleset, c, constants) for c in condition.items)
    if isinstance(condition, AnyOf):
        return all(_never_true(ruleset, c, constants) for c in condition.items)
    if not isinstance(condition, Compare) or condition.fact not in constants:
        return False
    operands = condition.operand if isinstance(condition.operand, tuple) else (condition.operand,)
    if any(isinstance(o, FactRef) for o in operands):
        return False
    return not any(_compares(ruleset, condition, {condition.fact: value}) for value in constants[condition.fact])


# --- the parts of a condition, and whether each held --------------------------------------------------


def condition_parts(condition: Condition, ruleset: Ruleset, path: str = "when") -> Iterator[tuple[str, Condition, str]]:
    """(path, part, text) of every part of a rule's condition below the whole, which is the rule itself; a rule whose
    condition is one leaf has that leaf as its one part."""
    if isinstance(condition, (AllOf, AnyOf)):
        word = "all" if isinstance(condition, AllOf) else "any"
        for index, item in enumerate(condition.items):
            yield from _parts_below(item, ruleset, f"{path}.{word}[{index}]")
    elif isinstance(condition, Not):
        yield from _parts_below(condition.item, ruleset, f"{path}.not")
    else:
        yield path, condition, one_line(condition, ruleset)


def _parts_below(condition: Condition, ruleset: Ruleset, path: str) -> Iterator[tuple[str, Condition, str]]:
    yield path, condition, one_line(condition, ruleset)
    if isinstance(condition, (AllOf, AnyOf, Not)):
        yield from condition_parts(condition, ruleset, path)


_WORDS = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "in": "in"}


def one_line(condition: Condition, ruleset: Ruleset) -> str:
    if isinstance(condition, (AllOf, AnyOf)):
        word = "all of" if isinstance(condition, AllOf) else "any of"
        return f"{word} ({'; '.join(one_line(c, ruleset) for c in condition.items)})"
    if isinstance(condition, Not):
        return f"not ({one_line(condition.item, ruleset)})"
    if isinstance(condition, Exists):
        return f"{condition.fact} is known"
    if isinstance(condition, Missing):
        return f"{condition.fact} is missing"
    operand = describe_operand(condition.operand, ruleset)
    return f"{condition.fact} {_WORDS[condition.op]} {'[' + operand + ']' if condition.op == 'in' else operand}"


def holds(ruleset: Ruleset, condition: Condition, facts: dict[str, Any]) -> bool:
    """The condition on an evaluation's facts (Evaluation.facts), with the compiler's meaning: a comparison with a
    missing fact never holds, and `not` is its plain negation (compiler.negate)."""
    if isinstance(condition, AllOf):
        return all(holds(ruleset, c, facts) for c in condition.items)
    if isinstance(condition, AnyOf):
        return any(holds(ruleset, c, facts) for c in condition.items)
    if isinstance(condition, Not):
        return not holds(ruleset, condition.item, facts)
    if isinstance(condition, Exists):
        return facts.get(condition.fact) is not None
    if isinstance(condition, Missing):
        return facts.get(condition.fact) is None
    return _compares(ruleset, condition, facts)


def _compares(ruleset: Ruleset, condition: Compare, facts: dict[str, Any]) -> bool:
    actual = _typed(ruleset, condition.fact, facts.get(condition.fact))
    operands = condition.operand if isinstance(condition.operand, tuple) else (condition.operand,)
    values = [_operand(ruleset, condition.fact, o, facts) for o in operands]
    if actual is None or any(v is None for v in values):
        return False
    if condition.op == "in":
        return any(_equal(actual, v) for v in values)
    if condition.op in ("eq", "ne"):
        return _equal(actual, values[0]) == (condition.op == "eq")
    try:
        return bool(_ORDER[condition.op](actual, values[0]))
    except TypeError:  # values the engine could not order either: the comparison does not hold
        return False


_ORDER = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


def _equal(a: Any, b: Any) -> bool:
    return isinstance(a, bool) == isinstance(b, bool) and bool(a == b)


def _operand(ruleset: Ruleset, fact: str, operand: Operand, facts: dict[str, Any]) -> Any:
    if isinstance(operand, ParamRef):
        return _typed(ruleset, fact, ruleset.param(operand.name))
    if isinstance(operand, FactRef):
        return _typed(ruleset, operand.name, facts.get(operand.name))
    assert isinstance(operand, Literal)
    return _typed(ruleset, fact, operand.value)


def _typed(ruleset: Ruleset, fact: str, value: Any) -> Any:
    """An evaluation's fact (dates written as ISO text, bounded values as the record wrote them) for comparing."""
    spec = ruleset.facts.get(fact)
    kind = spec.type if spec else "date" if fact == "today" else "string"
    if value is None or kind not in ("date", "number", "integer") or not isinstance(value, str):
        return value
    try:
        return dt.date.fromisoformat(value) if kind == "date" else float(value)
    except ValueError:  # a bounded value such as "<20": not one value, so no comparison with it holds
        return None


# --- the threshold ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """Least percentages a version's tests must cover to be released."""

    rules: float = 100.0
    table_rows: float = 100.0
    conditions: float = 0.0

    @classmethod
    def from_manifest(cls, data: object) -> Threshold:
        """From a release manifest already checked against its schema; the default when it names none."""
        written = data.get(THRESHOLD_KEY) if isinstance(data, dict) else None
        return cls(**{kind: float(value) for kind, value in (written or {}).items()})

    def as_dict(self) -> dict[str, float]:
        return {"rules": self.rules, "table_rows": self.table_rows, "conditions": self.conditions}


def shortfalls(coverage: Coverage, threshold: Threshold) -> list[str]:
    """One sentence per kind below the threshold, naming what is uncovered; empty when the threshold is met."""
    found = []
    for kind, least in threshold.as_dict().items():
        if coverage.percent(kind) + 1e-9 >= least:
            continue
        covered, total = coverage.counts()[kind]
        found.append(f"{kind.replace('_', ' ')} {covered}/{total} ({coverage.percent(kind):.0f}%, "
                     f"at least {least:g}% required); uncovered: {', '.join(_uncovered(coverage, kind))}")
    return found


def _uncovered(coverage: Coverage, kind: str) -> list[str]:
    if kind == "rules":
        return coverage.uncovered_rules
    if kind == "table_rows":
        return [f"{row.table} {row.band}" for row in coverage.uncovered_rows]
    return [f"{part.rule_id} {part.path}" for part in coverage.never_true]


def format_coverage(coverage: Coverage, threshold: Threshold | None = None) -> str:
    """The coverage of one version in plain text, for the terminal."""
    counts = coverage.counts()
    lines = [f"{coverage.ref}: coverage of {coverage.cases} case(s)",
             f"  rules fired {counts['rules'][0]}/{counts['rules'][1]} ({coverage.percent('rules'):.0f}%)"]
    lines += [f"    not fired: {rule}" for rule in coverage.uncovered_rules]
    lines += [f"    cannot fire with this version's parameters (not counted): {rule}"
              for rule in coverage.unreachable_rules]
    lines.append(f"  table rows hit {counts['table_rows'][0]}/{counts['table_rows'][1]} "
                 f"({coverage.percent('table_rows'):.0f}%)")
    lines += [f"    not hit: {row.table} {row.band} (line {row.line})" for row in coverage.uncovered_rows]
    lines.append(f"  topics produced {len(coverage.topics_produced)}/{len(coverage.topics_possible)}: "
                 + (", ".join(coverage.topics_produced) or "none"))
    lines += [f"    not produced: {topic}" for topic in coverage.topics_missing]
    lines.append(f"  conditions ever true {counts['conditions'][0]}/{counts['conditions'][1]} "
                 f"({coverage.percent('conditions'):.0f}%)")
    lines += [f"    never true: {part.rule_id} {part.path}: {part.text}" for part in coverage.never_true]
    if threshold is not None:
        below = shortfalls(coverage, threshold)
        lines.append("  threshold " + ", ".join(f"{k} {v:g}%" for k, v in threshold.as_dict().items())
                     + (": met" if not below else ": NOT MET"))
        lines += [f"    below: {sentence}" for sentence in below]
    return "\n".join(lines)
