"""The hardened durable-rules host and evaluate(): (ruleset, facts, date) -> decisions and trace.

durable-rules is fenced as its field notes require: no dispatcher threads, one process-wide lock around
every engine call, a fresh session per evaluation deleted in `finally`, explicit fact ids, typed inputs,
and exceptions raised in actions brought back out instead of swallowed.
"""
from __future__ import annotations

import copy
import datetime as dt
import itertools
import threading
from typing import Any

import durable.engine

from .compiler import CompiledRuleset, compile_ruleset, engine_name, to_engine_value
from .errors import EvaluationError
from .expressions import ExpressionError
from .inputs import prepare_inputs, to_json_value
from .model import (Comparison, Decision, Derivation, Evaluation, Exists, FactRef, Firing, Missing,
                    ParamRef, Rule, Ruleset, Suggestion)
from .templates import render

SUMMARY_LIMIT = 139  # CDS Hooks: summary under 140 characters


class _QuietHost(durable.engine.Host):
    """A Host without its background dispatcher threads, which raced the caller and crashed under load."""

    def _run(self) -> None:
        return None


_LOCK = threading.RLock()
_HOST: _QuietHost | None = None
_REGISTERED: dict[str, CompiledRuleset] = {}  # by content-addressed engine name
_BY_OBJECT: dict[int, tuple[Ruleset, CompiledRuleset]] = {}  # by loaded object, to skip hashing per call
_ACTIVE: list["_Run"] = []  # the evaluation in progress (at most one: we hold the lock)
_SESSIONS = itertools.count(1)


def _host() -> _QuietHost:
    global _HOST
    if _HOST is None:
        _HOST = _QuietHost()
    return _HOST


class Engine:
    """Registers ruleset versions once per process and evaluates them."""

    def register(self, ruleset: Ruleset) -> CompiledRuleset:
        """Compile and register a version once; later calls, with this object or a copy, return it at once."""
        known = _BY_OBJECT.get(id(ruleset))
        if known is not None and known[0] is ruleset:
            return known[1]
        with _LOCK:
            compiled = _REGISTERED.get(engine_name(ruleset))
            if compiled is None:
                compiled = compile_ruleset(ruleset, _action_for)
                # set_rulesets mutates what it is given: hand it a copy.
                _host().set_rulesets({compiled.engine_name: copy.deepcopy(compiled.definition)})
                _REGISTERED[compiled.engine_name] = compiled
            _BY_OBJECT[id(ruleset)] = (ruleset, compiled)  # holds the object, so its id is not reused
            return compiled

    def evaluate(self, ruleset: Ruleset, facts: dict[str, Any], evaluation_date: dt.date | str,
                 hook: str | None = None, reasons: dict[str, str] | None = None) -> Evaluation:
        """Pure from the caller's view: the same inputs give the same result, and nothing is kept."""
        if isinstance(evaluation_date, str):
            evaluation_date = dt.date.fromisoformat(evaluation_date)
        compiled = self.register(ruleset)
        inputs, missing = prepare_inputs(ruleset, facts, evaluation_date, hook, reasons or {})
        run = _Run(compiled, inputs, missing, evaluation_date)
        with _LOCK:
            _run_strata(compiled, run)
        return run.result()


def _run_strata(compiled: CompiledRuleset, run: "_Run") -> None:
    host, sid = _host(), f"e{next(_SESSIONS)}"
    _ACTIVE.append(run)
    try:
        for stratum in range(compiled.stratum_count):
            document = run.engine_document(stratum, sid)
            try:
                state = host.assert_fact(compiled.engine_name, document)
            except durable.engine.MessageNotHandledException:
                state = None  # no rule of this stratum matched
            except Exception as exc:  # the C core's own error type: say which stratum, never crash
                raise EvaluationError(f"the engine refused stratum {stratum} of {compiled.ruleset.ref}: {exc}") from None
            if run.error is not None:
                raise run.error
            if state and state.get("exception"):
                raise EvaluationError(f"rule action failed: {state['exception']}")
    finally:
        _ACTIVE.pop()
        try:
            host.delete_state(compiled.engine_name, sid)
        except Exception:  # noqa: BLE001 - a session that never started has nothing to delete
            pass


def _action_for(rule: Rule):
    """The callable durable-rules runs when `rule` matches; it closes over the rule."""

    def action(c) -> None:
        run = _ACTIVE[-1]
        try:
            run.fire(rule)
        except Exception as exc:  # durable-rules would swallow it: keep it to raise after the call
            run.error = exc if isinstance(exc, EvaluationError) else EvaluationError(f"rule '{rule.id}': {exc}")
            raise

    return action


class _Run:
    """The state of one evaluation: facts so far, and what each fired rule concluded."""

    def __init__(self, compiled: CompiledRuleset, facts: dict, missing: dict, evaluation_date: dt.date):
        self.compiled = compiled
        self.ruleset = compiled.ruleset
        self.facts = facts
        self.missing = missing
        self.evaluation_date = evaluation_date
        self.firings: list[tuple[int, Firing]] = []
        self.decisions: list[tuple[int, Decision]] = []
        self.error: Exception | None = None
        self._fired: set[str] = set()
        self.bands: dict[str, str] = {}  # derived fact -> the table row it came from, for card texts

    def engine_document(self, stratum: int, sid: str) -> dict:
        """Only the facts this stratum's patterns test: less to encode and match, the same outcome."""
        document = {name: to_engine_value(self.facts[name])
                    for name in self.compiled.stratum_facts[stratum] if name in self.facts}
        document.update(id=f"s{stratum}", sid=sid, stratum=stratum)
        return document

    def fire(self, rule: Rule) -> None:
        # durable-rules runs an action once per matching branch of an `any`: one firing is the meaning.
        if rule.id in self._fired:
            return
        self._fired.add(rule.id)
        comparisons = self._comparisons(rule)
        derived = {}
        for derivation in rule.derive:
            value = self._derive(rule, derivation)
            if value is not None:
                self._set(rule, derivation.fact, value)
                derived[derivation.fact] = value
        for derivation in rule.append:
            line = render(derivation.source, self._context())
            self.facts.setdefault(derivation.fact, []).append(line)
            derived.setdefault(derivation.fact, []).append(line)
        order = self.compiled.rule_order[rule.id]
        self.firings.append((order, Firing(rule.id, rule.explanation, comparisons, derived)))
        if rule.decide:
            self.decisions.append((order, self._decide(rule)))

    # --- consequences ---

    def _set(self, rule: Rule, name: str, value: Any) -> None:
        if name in self.facts and self.facts[name] != value:
            raise EvaluationError(f"rule '{rule.id}' sets '{name}' to {value!r}, but it is already "
                                  f"{self.facts[name]!r}: two rules disagree")
        self.facts[name] = value
        self.missing.pop(name, None)

    def _derive(self, rule: Rule, derivation: Derivation) -> Any:
        kind, source = derivation.kind, derivation.source
        try:
            if kind == "value":
                value = source
            elif kind == "param":
                value = self.ruleset.param(source)
            elif kind == "fact":
                value = self.facts.get(source)
            elif kind == "table":
                value, self.bands[derivation.fact] = self._lookup(*source)
            else:
                value = self.compiled.expressions[source].evaluate({**self.compiled.param_values, **self.facts})
        except (ExpressionError, TypeError) as exc:
            self.missing[derivation.fact] = f"not derived by rule '{rule.id}': {exc}"
            return None
        if value is None:
            self.missing.setdefault(derivation.fact, f"not derived by rule '{rule.id}'")
            return None
        return _typed(self.ruleset.facts[derivation.fact].type, value)

    def _lookup(self, table_name: str, input_fact: str) -> Any:
        table, x = self.ruleset.tables[table_name], self.facts.get(input_fact)
        if x is None:
            raise ExpressionError(f"'{input_fact}' has no value")
        for band in table.bands:
            if band.contains(x):
                output = band.output
                return (self.ruleset.param(output.name) if isinstance(output, ParamRef) else output), band.text
        raise ExpressionError(f"{x} is outside every row of table '{table_name}'")

    def _decide(self, rule: Rule) -> Decision:
        template, context = rule.decide, self._context()
        summary = render(template.summary, context)
        if len(summary) > SUMMARY_LIMIT:
            summary = summary[: SUMMARY_LIMIT - 1].rstrip() + "…"
        detail = render(template.detail, context)
        suggestion, withheld = self._suggestion(rule, context)
        if withheld:
            detail += f"\n\n**No order is suggested:** {withheld}"
        return Decision(rule_id=rule.id, topic=template.topic, indicator=template.indicator, summary=summary,
                        detail=detail, suggestion=suggestion, override_reasons=list(template.override_reasons),
                        links=list(template.links))

    def _suggestion(self, rule: Rule, context: dict) -> tuple[Suggestion | None, str | None]:
        template = rule.decide.suggestion
        if template is None:
            return None, None
        dose = self.facts.get(template.dose_fact) if template.dose_fact else None
        order_id = self.facts.get(template.order_fact) if template.order_fact else None
        if template.dose_fact and dose is None:
            return None, f"the dose ('{template.dose_fact}') could not be determined."
        if template.order_fact and order_id is None:
            return None, f"the order to change ('{template.order_fact}') was not found."
        limit_name = self.ruleset.medication["max_daily_dose"]["param"]
        limit = self.ruleset.param(limit_name)
        if dose is not None and dose > limit:
            return None, f"the computed daily dose {dose} exceeds the maximum {limit} ('{limit_name}')."
        label = render(template.label, context)
        return Suggestion(template.action, label, dose, None if order_id is None else str(order_id)), None

    # --- explanation ---

    def _comparisons(self, rule: Rule) -> list[Comparison]:
        found = []
        for leaf in self.compiled.leaves[rule.id]:
            actual = to_json_value(self.facts.get(leaf.fact))
            if isinstance(leaf, (Exists, Missing)):
                found.append(Comparison(leaf.fact, "exists" if isinstance(leaf, Exists) else "missing", actual))
                continue
            operands = leaf.operand if isinstance(leaf.operand, tuple) else (leaf.operand,)
            values = [self._operand_value(o) for o in operands]
            refs = [_operand_ref(o) for o in operands]
            found.append(Comparison(leaf.fact, leaf.op, actual, values if leaf.op == "in" else values[0],
                                    None if leaf.op == "in" else refs[0]))
        return found

    def _operand_value(self, operand) -> Any:
        if isinstance(operand, ParamRef):
            return self.ruleset.param(operand.name)
        if isinstance(operand, FactRef):
            return to_json_value(self.facts.get(operand.name))
        return operand.value

    def _context(self) -> dict:
        return {**self.compiled.param_values, **self.facts, "missing": dict(self.missing), "params": self.ruleset.parameters,
                "ruleset": {"id": self.ruleset.id, "version": self.ruleset.version, "title": self.ruleset.title},
                "evaluation_date": self.evaluation_date, "band": dict(self.bands)}

    def result(self) -> Evaluation:
        return Evaluation(
            ruleset_id=self.ruleset.id, version=self.ruleset.version,
            evaluation_date=self.evaluation_date.isoformat(),
            facts={k: to_json_value(v) for k, v in self.facts.items()},
            decisions=[d for _, d in sorted(self.decisions, key=lambda pair: pair[0])],
            trace=[f for _, f in sorted(self.firings, key=lambda pair: pair[0])],
            missing=dict(self.missing))


def _operand_ref(operand) -> str | None:
    if isinstance(operand, ParamRef):
        return f"param:{operand.name}"
    if isinstance(operand, FactRef):
        return f"fact:{operand.name}"
    return None


def _typed(fact_type: str, value: Any) -> Any:
    if fact_type == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    if fact_type == "number" and isinstance(value, float):
        return round(value, 6)  # keep 2.5 + 2.5 == 5 and hide float noise in card text
    return value
