"""The hardened durable-rules host and evaluate(): (ruleset, facts, date) -> decisions and trace.

durable-rules is fenced as its field notes require: no dispatcher threads, one process-wide lock around
every engine call, a fresh session per evaluation deleted in `finally`, explicit fact ids and typed inputs.

Matching is durable-rules' C core; its Python layer is used to register rulesets only. Each stratum's document
is asserted to the core, and the actions it starts are run here, one after the other: the rule's consequences
are computed by `_Run.fire`, and an exception there is raised to the caller, never swallowed. durable's own action
loop does the same work with a closure, a promise, a clock reading and JSON round trips per action, which
measured 60% of an evaluation.

Every session is opened by a document that fires the runtime's own opening rule (`SESSION_OPENER`) before any
protocol fact is asserted. The core's `createStateNode` leaves a session's action context (`context.messages`,
`context.stateFact`) as whatever memory its state pool held, and `deleteStateNode` frees those pointers; only
starting an action sets them, and completing it sets them to NULL. A session in which no action ever started was
therefore freed with garbage pointers: the first evaluation that fired nothing in a fresh process aborted it. Once
the opener's action has run and completed, the context is defined and `delete_state` is safe, whatever fires later.
"""
from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import durable.engine
import durable_rules_engine as core  # type: ignore[import-not-found]  # durable-rules' C core, without stubs

from .compiler import CompiledRuleset, compile_ruleset, engine_name, to_engine_value
from .errors import EvaluationError
from .expressions import Expression, ExpressionError
from .inputs import prepare_inputs, to_json_value
from .model import (
    Comparison,
    Decision,
    Derivation,
    Evaluation,
    Exists,
    FactRef,
    Firing,
    Missing,
    Operand,
    ParamRef,
    Rule,
    Ruleset,
    Suggestion,
)
from .templates import Markdown, TextTooLong, escape_markdown, prepare, render, render_plain

T = TypeVar("T")
SUMMARY_LIMIT = 139  # CDS Hooks: summary under 140 characters

# The core's assert_fact results we expect (durable's rules.h); any other (fact id seen before, deferred) is an error.
_HANDLED, _NOT_HANDLED = 0, 1


def clip_summary(text: str) -> str:
    """A decision summary within the CDS Hooks limit: cut, with an ellipsis, when it is longer."""
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1].rstrip() + "…"


class _QuietHost(durable.engine.Host):  # type: ignore[misc]  # durable-rules has no type hints
    """A Host without its background dispatcher threads, which raced the caller and crashed under load."""

    def _run(self) -> None:
        return None


_LOCK = threading.RLock()
_HOST: _QuietHost | None = None
_REGISTERED: dict[str, tuple[CompiledRuleset, int]] = {}  # content-addressed engine name -> (compiled, core handle)
_BY_OBJECT: dict[int, tuple[Ruleset, CompiledRuleset, int]] = {}  # by loaded object, to skip hashing per call
_SESSIONS = itertools.count(1)

# The runtime's own rule, registered beside every version's rules: it matches only the opening document, which no
# protocol rule can match (theirs test `stratum`), and its name is not a valid rule id (ids are lower-case slugs).
SESSION_OPENER = "_session_open"
_OPENER_PATTERN = {"m": {"session": "open"}}


def _host() -> _QuietHost:
    global _HOST
    if _HOST is None:
        _HOST = _QuietHost()
    return _HOST


class Engine:
    """Registers ruleset versions once per process and evaluates them."""

    def register(self, ruleset: Ruleset) -> CompiledRuleset:
        """Compile and register a version once; later calls, with this object or a copy, return it at once."""
        return self._registered(ruleset)[0]

    def _registered(self, ruleset: Ruleset) -> tuple[CompiledRuleset, int]:
        known = _BY_OBJECT.get(id(ruleset))
        if known is not None and known[0] is ruleset:
            return known[1], known[2]
        with _LOCK:
            found = _REGISTERED.get(engine_name(ruleset))
            if found is None:
                compiled = compile_ruleset(ruleset, _never_called)
                # set_rulesets mutates what it is given: hand it a copy.
                definition = {**copy.deepcopy(compiled.definition),
                              SESSION_OPENER: {"all": [_OPENER_PATTERN], "run": _never_called(None)}}
                _host().set_rulesets({compiled.engine_name: definition})
                _prepare_texts(ruleset)
                found = compiled, _host().get_ruleset(compiled.engine_name)._handle
                _REGISTERED[compiled.engine_name] = found
            _BY_OBJECT[id(ruleset)] = (ruleset, *found)  # holds the object, so its id is not reused
            return found

    def evaluate(self, ruleset: Ruleset, facts: dict[str, Any], evaluation_date: dt.date | str,
                 hook: str | None = None, reasons: dict[str, str] | None = None) -> Evaluation:
        """Pure from the caller's view: the same inputs give the same result, and nothing is kept."""
        if isinstance(evaluation_date, str):
            evaluation_date = dt.date.fromisoformat(evaluation_date)
        compiled, handle = self._registered(ruleset)
        inputs, missing = prepare_inputs(ruleset, facts, evaluation_date, hook, reasons or {})
        run = _Run(compiled, inputs, missing, evaluation_date)
        with _LOCK:
            _run_strata(compiled, handle, run)
        return run.result()

    def each(self, function: Callable[..., T], rulesets: Sequence[Ruleset], items: Sequence[Any],
             doing: str = "") -> list[T]:
        """[function(self, *rulesets, item) for item in items]: what SandboxEngine.each runs in its child."""
        return [function(self, *rulesets, item) for item in items]


def _prepare_texts(ruleset: Ruleset) -> None:
    """Every text a rule of the version renders, compiled as it is registered rather than by a call's evaluation:
    each rendered as _Run renders it, markdown or plain."""
    for rule in ruleset.rules:
        for derivation in rule.append:
            prepare(derivation.source, markdown=True)
        if rule.decide:
            prepare(rule.decide.summary, markdown=False)
            prepare(rule.decide.detail, markdown=True)
            if rule.decide.suggestion:
                prepare(rule.decide.suggestion.label, markdown=False)


def _run_strata(compiled: CompiledRuleset, handle: int, run: _Run) -> None:
    sid = f"e{next(_SESSIONS)}"
    _open_session(handle, sid, run)
    try:
        for stratum in range(compiled.stratum_count):
            _run_stratum(handle, run.engine_document(stratum, sid), run, stratum)
    finally:
        core.delete_state(handle, sid)


def _open_session(handle: int, sid: str, run: _Run) -> None:
    """Create the session and run the opener's action through the core, so its action context is defined.

    If opening fails, the session is left in the core rather than deleted: deleting it could free garbage pointers
    (see the module docstring), and one leaked session is the lesser harm."""
    try:
        result, state_handle = core.assert_fact(handle, json.dumps({"id": "open", "sid": sid, "session": "open"}))
        started = core.start_action_for_state(handle, state_handle) if result == _HANDLED else None
    except Exception as exc:  # the C core's own error type
        raise EvaluationError(f"the engine could not open a session for {run.ruleset.ref}: {exc}") from None
    if started is None or _first_key(started[1]) != SESSION_OPENER:
        raise EvaluationError(f"the engine did not open a session for {run.ruleset.ref} (code {result})")
    if core.complete_and_start_action(handle, state_handle) is not None:
        raise EvaluationError(f"the engine started a protocol rule on the opening document of {run.ruleset.ref}")


def _run_stratum(handle: int, document: dict[str, Any], run: _Run, stratum: int) -> None:
    """Assert one stratum's document and run the action of every rule it matched, in the core's order."""
    try:
        result, state_handle = core.assert_fact(handle, _ENCODER.encode(document))
    except Exception as exc:  # the C core's own error type: say which stratum, never crash
        raise EvaluationError(f"the engine refused stratum {stratum} of {run.ruleset.ref}: {exc}") from None
    if result == _NOT_HANDLED:
        return  # no rule of this stratum matched
    if result != _HANDLED:
        raise EvaluationError(f"the engine did not take stratum {stratum} of {run.ruleset.ref} (code {result})")
    started = core.start_action_for_state(handle, state_handle)
    if started is None:
        return
    # durable-rules' own loop hands each action's session state back (update_state) before completing it; no rule
    # here reads session state and the actions keep their results in _Run, so the state is never changed or sent.
    _state, matched = started
    while matched is not None:
        rule_id = _first_key(matched)
        try:
            run.fire(run.compiled.rules[rule_id])
        except Exception as exc:
            _abandon(handle, state_handle)
            if isinstance(exc, EvaluationError):
                raise
            raise EvaluationError(f"rule '{rule_id}': {exc}") from exc
        matched = core.complete_and_start_action(handle, state_handle)


_DECODER = json.JSONDecoder()
# json.dumps(document, ensure_ascii=False) builds an encoder per call: one, made once, encodes identically.
_ENCODER = json.JSONEncoder(ensure_ascii=False)


def _first_key(matched: str) -> str:
    """The rule id of `{"<rule id>": <the matched document>}`, read without decoding the document."""
    rule_id: str = _DECODER.raw_decode(matched, matched.index('"'))[0]
    return rule_id


def _abandon(handle: int, state_handle: int) -> None:
    try:
        core.abandon_action(handle, state_handle)
    except Exception:  # noqa: BLE001 - the session is deleted next anyway; the action's own error matters
        pass


def _never_called(rule: Rule | None) -> Callable[[object], None]:
    """The action durable-rules registers for `rule`: its Python action loop is not used (see above)."""
    name = SESSION_OPENER if rule is None else rule.id

    def action(c: object) -> None:
        raise EvaluationError(f"rule '{name}' was run by durable-rules' own action loop")

    return action


class _Run:
    """The state of one evaluation: facts so far, and what each fired rule concluded."""

    def __init__(self, compiled: CompiledRuleset, facts: dict[str, Any], missing: dict[str, str],
                 evaluation_date: dt.date) -> None:
        self.compiled = compiled
        self.ruleset = compiled.ruleset
        self.facts = facts
        self.missing = missing
        self.evaluation_date = evaluation_date
        self.firings: list[tuple[int, Firing]] = []
        self.decisions: list[tuple[int, Decision]] = []
        self._fired: set[str] = set()
        self.bands: dict[str, str] = {}  # derived fact -> the table row it came from, for card texts

    def engine_document(self, stratum: int, sid: str) -> dict[str, Any]:
        """Only the facts this stratum's patterns test: less to encode and match, the same outcome."""
        document = {name: to_engine_value(self.facts[name])
                    for name in self.compiled.stratum_facts[stratum] if name in self.facts}
        document.update(id=f"s{stratum}", sid=sid, stratum=stratum)
        return document

    def fire(self, rule: Rule) -> None:
        try:
            self._fire(rule)
        except TextTooLong as error:
            raise EvaluationError(f"rule '{rule.id}': {error}; card texts are capped") from None

    def _fire(self, rule: Rule) -> None:
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
                value = self._evaluated(self.compiled.expressions[source])
        except (ExpressionError, TypeError) as exc:
            self.missing[derivation.fact] = f"not derived by rule '{rule.id}': {exc}"
            return None
        if value is None:
            self.missing.setdefault(derivation.fact, f"not derived by rule '{rule.id}'")
            return None
        return _typed(self.ruleset.facts[derivation.fact].type, value)

    def _evaluated(self, expression: Expression) -> Any:
        """The expression on the facts, and the parameters no fact hides: only the few names it can look up, rather
        than all the facts and parameters merged for each expression."""
        facts, params = self.facts, self.compiled.param_values
        return expression.evaluate({name: facts[name] if name in facts else params[name]
                                    for name in expression.looked_up if name in facts or name in params})

    def _lookup(self, table_name: str, input_fact: str) -> Any:
        table, x = self.ruleset.tables[table_name], self.facts.get(input_fact)
        if x is None:
            raise ExpressionError(f"'{input_fact}' has no value")
        for band in table.bands:
            if band.contains(x):
                output = band.output
                value = self.ruleset.param(output.name) if isinstance(output, ParamRef) else output
                return value, Markdown(band.text)  # the row as the ruleset writes it, e.g. "(20, inf)"
        raise ExpressionError(f"{x} is outside every row of table '{table_name}'")

    def _decide(self, rule: Rule) -> Decision:
        template, context = rule.decide, self._context()
        assert template is not None  # _fire decides only for a rule that does
        summary = render_plain(template.summary, context)
        summary = clip_summary(summary)
        detail: str = render(template.detail, context)
        suggestion, withheld = self._suggestion(rule, context)
        if withheld:
            detail += f"\n\n**No order is suggested:** {withheld}"
        return Decision(rule_id=rule.id, topic=template.topic, indicator=template.indicator, summary=summary,
                        detail=detail, suggestion=suggestion, override_reasons=list(template.override_reasons),
                        links=list(template.links))

    def _suggestion(self, rule: Rule, context: dict[str, Any]) -> tuple[Suggestion | None, str | None]:
        assert rule.decide is not None  # called by _decide only
        template = rule.decide.suggestion
        if template is None:
            return None, None
        dose = self.facts.get(template.dose_fact) if template.dose_fact else None
        order_id = self.facts.get(template.order_fact) if template.order_fact else None
        if template.dose_fact and dose is None:
            return None, f"the dose ('{template.dose_fact}') could not be determined."
        if template.order_fact and order_id is None:
            why = self.missing.get(template.order_fact)
            return None, (f"the order to change ('{template.order_fact}') was not found"
                          + (f": {escape_markdown(why)}." if why else "."))
        assert self.ruleset.medication is not None  # the checks refuse a suggestion without the medication
        limit_name = self.ruleset.medication.max_daily_dose_param
        limit = self.ruleset.param(limit_name)
        if dose is not None and dose > limit:
            return None, f"the computed daily dose {dose} exceeds the maximum {limit} ('{limit_name}')."
        label = render_plain(template.label, context)
        return Suggestion(template.action, label, dose, None if order_id is None else str(order_id)), None

    # --- explanation ---

    def _comparisons(self, rule: Rule) -> list[Comparison]:
        found = []
        for leaf in self.compiled.leaves[rule.id]:
            actual = to_json_value(self.facts.get(leaf.fact))
            if isinstance(leaf, (Exists, Missing)):
                found.append(Comparison(leaf.fact, "exists" if isinstance(leaf, Exists) else "missing", actual))
                continue
            if isinstance(leaf.operand, tuple):  # "in": the list of values, with no one source
                found.append(Comparison(leaf.fact, leaf.op, actual, [self._operand_value(o) for o in leaf.operand]))
            else:
                found.append(Comparison(leaf.fact, leaf.op, actual, self._operand_value(leaf.operand),
                                        _operand_ref(leaf.operand)))
        return found

    def _operand_value(self, operand: Operand) -> Any:
        if isinstance(operand, ParamRef):
            return self.ruleset.param(operand.name)
        if isinstance(operand, FactRef):
            return to_json_value(self.facts.get(operand.name))
        return operand.value

    def _context(self) -> dict[str, Any]:
        return {**self.compiled.param_values, **self.facts, "missing": dict(self.missing),
                "params": self.ruleset.parameters,
                "ruleset": {"id": self.ruleset.id, "version": self.ruleset.version, "title": self.ruleset.title},
                "evaluation_date": self.evaluation_date, "band": dict(self.bands)}

    def result(self) -> Evaluation:
        return Evaluation(
            ruleset_id=self.ruleset.id, version=self.ruleset.version,
            evaluation_date=self.evaluation_date.isoformat(),
            facts={k: to_json_value(v) for k, v in self.facts.items()},
            decisions=[d for _, d in sorted(self.decisions, key=lambda pair: pair[0])],
            trace=[f for _, f in sorted(self.firings, key=lambda pair: pair[0])],
            missing=dict(self.missing), bands={fact: str(text) for fact, text in self.bands.items()})


def _operand_ref(operand: Operand) -> str | None:
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
