"""Semantic checks the JSON Schema cannot express. Each check adds errors and the next one still runs.

The checks, in order: file name, names (facts, parameters, tables, override reasons), fact declarations,
tables (gaps, overlaps, maximum), expressions and templates, the protocol clauses rules cite, derivations and their
strata (no cycles), rules that can never fire, and the tests' own facts.
"""
from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from .analysis import CycleError, compute_strata, writes_of
from .compiler import CORE_PATTERN_ENTRIES, core_pattern_entries, rule_pattern
from .document import Document
from .errors import RulesetError
from .expressions import ExpressionError, parse_expression
from .model import (
    DOSED_ACTIONS,
    ORDER_ACTIONS,
    RESERVED_FACTS,
    AllOf,
    Compare,
    Condition,
    Exists,
    Literal,
    Missing,
    Operand,
    ParamRef,
    Rule,
    Ruleset,
    Table,
)
from .templates import TEMPLATE_GLOBALS, template_names

ENGINE_FIELDS = {"id", "sid", "stratum"}  # used by the engine's own documents
NUMERIC = {"number", "integer"}

_Path = tuple[str | int, ...]  # where in the document, as Document.error takes it


def check_ruleset(ruleset: Ruleset, doc: Document, tests_doc: Document | None = None) -> list[RulesetError]:
    errors: list[RulesetError] = []
    for stage in (_check_file_name, _check_fact_declarations, _check_parameters_used, _check_tables,
                  _check_rules, _check_citations, _check_never_fires, _check_strata):
        stage(ruleset, doc, errors)
    if not errors:  # compiled only once the rules are sound: a misspelt parameter has no value to compile
        _check_core_sizes(ruleset, doc, errors)
    _check_tests(ruleset, _data(doc).get("tests", []), doc, errors)
    if tests_doc is not None:
        _check_tests(ruleset, _data(tests_doc).get("tests", []), tests_doc, errors)
    return sorted(_merge_parameter_misuse(errors), key=lambda e: (e.file, e.line, e.column))


# --- helpers ----------------------------------------------------------------------------------


def _data(doc: Document) -> dict[str, Any]:
    """The document's top mapping: the checks only see documents that passed the schema, which makes it one."""
    assert isinstance(doc.data, dict)
    return doc.data


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _known_facts(ruleset: Ruleset) -> dict[str, str]:
    types = dict(RESERVED_FACTS)
    types.update({name: spec.type for name, spec in ruleset.facts.items()})
    return types


def _need_fact(name: str, ruleset: Ruleset, doc: Document, path: _Path, errors: list[RulesetError]) -> None:
    if name not in _known_facts(ruleset):
        errors.append(doc.error(path, f"unknown fact '{name}'{_suggest(name, _known_facts(ruleset))}; "
                                      "declare it under 'facts'"))


def _need_param(name: str, ruleset: Ruleset, doc: Document, path: _Path, errors: list[RulesetError]) -> bool:
    if name not in ruleset.parameters:
        errors.append(doc.error(path, f"unknown parameter '{name}'{_suggest(name, ruleset.parameters)}"))
        return False
    return True


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- stages -----------------------------------------------------------------------------------


def _check_file_name(ruleset: Ruleset, doc: Document, errors: list[RulesetError]) -> None:
    path = Path(doc.file)
    if path.suffix in (".yaml", ".yml") and path.stem[:1].isdigit() and path.stem != ruleset.version:
        errors.append(doc.error(("version",), f"version '{ruleset.version}' does not match the file name "
                                              f"'{path.name}'"))
    if path.parent.name not in ("", ".") and path.stem[:1].isdigit() and path.parent.name != ruleset.id:
        errors.append(doc.error(("id",), f"id '{ruleset.id}' does not match the folder '{path.parent.name}'"))


def _check_fact_declarations(ruleset: Ruleset, doc: Document, errors: list[RulesetError]) -> None:
    for name, spec in ruleset.facts.items():
        path = ("facts", name)
        if name in RESERVED_FACTS or name in ENGINE_FIELDS:
            errors.append(doc.error(path, f"'{name}' is reserved; choose another name"))
        if spec.observed_on is not None:
            if ruleset.facts.get(spec.observed_on) is None or ruleset.facts[spec.observed_on].type != "date":
                errors.append(doc.error(path + ("observed_on",), f"'{spec.observed_on}' must be a declared date fact"))
        if spec.max_age_days is not None:
            if _need_param(spec.max_age_days, ruleset, doc, path + ("max_age_days",), errors) and \
                    not _is_number(ruleset.param(spec.max_age_days)):
                errors.append(doc.error(path + ("max_age_days",), "the age limit must be a number of days"))
            if spec.observed_on is None:
                errors.append(doc.error(path, "'max_age_days' needs 'observed_on' to know the value's date"))
        if spec.plausible is not None and (spec.type not in NUMERIC or spec.plausible[0] > spec.plausible[1]):
            errors.append(doc.error(path + ("plausible",), "'plausible' is [min, max] of a number fact"))
    _check_therapy_start(ruleset, doc, errors)
    medication = ruleset.medication
    if medication:
        name = medication.max_daily_dose_param
        if _need_param(name, ruleset, doc, ("medication", "max_daily_dose"), errors) and \
                not _is_number(ruleset.param(name)):
            errors.append(doc.error(("medication", "max_daily_dose"), "the maximum daily dose must be a number"))


def _check_therapy_start(ruleset: Ruleset, doc: Document, errors: list[RulesetError]) -> None:
    """The start date is read from the record before any rule runs (engine/choice.py): an input date fact."""
    name = ruleset.therapy_start
    if name is None:
        return
    spec = ruleset.facts.get(name)
    if spec is None:
        errors.append(doc.error(("therapy_start",), f"unknown fact '{name}'{_suggest(name, ruleset.facts)}; "
                                                    "therapy_start must be a declared date fact"))
    elif spec.type != "date" or spec.derived:
        errors.append(doc.error(("therapy_start",), f"therapy_start '{name}' must be a date fact read from the "
                                                    f"record, not {'derived' if spec.derived else spec.type}"))


def _check_parameters_used(ruleset: Ruleset, doc: Document, errors: list[RulesetError]) -> None:
    for name, table in ruleset.tables.items():
        if table.output_max:
            _need_param(table.output_max, ruleset, doc, ("tables", name, "output_max"), errors)
        for index, band in enumerate(table.bands):
            if isinstance(band.output, ParamRef):
                _need_param(band.output.name, ruleset, doc, ("tables", name, "rows", index, "output"), errors)


def _band_value(ruleset: Ruleset, output: Any) -> Any:
    if isinstance(output, ParamRef):
        return ruleset.parameters[output.name].value if output.name in ruleset.parameters else None
    return output


def _check_tables(ruleset: Ruleset, doc: Document, errors: list[RulesetError]) -> None:
    for name, table in ruleset.tables.items():
        _check_coverage(name, table, doc, errors)
        if table.output_max and table.output_max in ruleset.parameters:
            limit = ruleset.param(table.output_max)
            for index, band in enumerate(table.bands):
                value = _band_value(ruleset, band.output)
                if _is_number(value) and _is_number(limit) and value > limit:
                    errors.append(doc.error(("tables", name, "rows", index, "output"),
                                            f"output {value} exceeds the maximum {limit} "
                                            f"(parameter '{table.output_max}')"))


def _check_coverage(name: str, table: Table, doc: Document, errors: list[RulesetError]) -> None:
    """Bands sorted by where they start must tile the domain: each starts exactly where the last ended.

    Positions are (value, 0|1): a band closed at its low end starts at (a, 0), open at (a, 1); a band
    closed at its high end leaves the next value needed at (b, 1), open at (b, 0).
    """
    inf = float("inf")
    low, high, low_closed, high_closed = table.domain
    needed = (-inf if low is None else low, 0 if low_closed else 1)
    rows = sorted(enumerate(table.bands),
                  key=lambda pair: (-inf if pair[1].low is None else pair[1].low, 0 if pair[1].low_closed else 1))
    for position, (index, band) in enumerate(rows):
        path = ("tables", name, "rows", index, "band")
        start = (-inf if band.low is None else band.low, 0 if band.low_closed else 1)
        end = (inf if band.high is None else band.high, 1 if band.high_closed else 0)
        if end <= start:
            errors.append(doc.error(path, f"the band {band.text} is empty"))
            continue
        if start > needed:
            errors.append(doc.error(path, f"gap: no row covers values from {_fmt(needed[0])} up to "
                                          f"{_fmt(start[0])} (before band {band.text})"))
        elif start < needed and position > 0:
            errors.append(doc.error(path, f"overlap: band {band.text} overlaps the row before it, which ends "
                                          f"at {_fmt(needed[0])}"))
        needed = max(needed, end)
    domain_end = (inf if high is None else high, 1 if high_closed else 0)
    if rows and needed < domain_end:
        errors.append(doc.error(("tables", name, "rows", rows[-1][0], "band"),
                                f"gap: no row covers values from {_fmt(needed[0])} up to {_fmt(domain_end[0])} "
                                "at the end of the domain"))


def _fmt(x: float | None) -> str:
    return "infinity" if x in (None, float("inf"), float("-inf")) else f"{x:g}"


# --- rules ------------------------------------------------------------------------------------


def _check_rules(ruleset: Ruleset, doc: Document, errors: list[RulesetError]) -> None:
    seen: dict[str, int] = {}
    writers: set[str] = set()
    for index, rule in enumerate(ruleset.rules):
        base = ("rules", index)
        if rule.id in seen:
            errors.append(doc.error(base + ("id",), f"rule id '{rule.id}' is used twice (first in rule "
                                                    f"#{seen[rule.id] + 1})"))
        seen.setdefault(rule.id, index)
        _check_condition(_data(doc)["rules"][index]["when"], base + ("when",), ruleset, doc, errors)
        _check_consequences(rule, base + ("then",), ruleset, doc, errors)
        writers |= writes_of(rule)
    for name, spec in ruleset.facts.items():
        if spec.derived and name not in writers:
            errors.append(doc.error(("facts", name), f"derived fact '{name}' is never set by any rule"))


def _check_citations(ruleset: Ruleset, doc: Document, errors: list[RulesetError]) -> None:
    """A rule may cite only clauses the ruleset declares: a misspelt id would trace a rule to nothing."""
    known = _data(doc).get("clauses") or {}
    for index, rule in enumerate(ruleset.rules):
        for position, clause in enumerate(rule.cites):
            if clause not in known:
                errors.append(doc.error(("rules", index, "cites", position),
                                        f"rule '{rule.id}' cites unknown clause '{clause}'{_suggest(clause, known)}; "
                                        "declare it under 'clauses'"))


def _check_core_sizes(ruleset: Ruleset, doc: Document, errors: list[RulesetError]) -> None:
    """The rule engine's core holds a bounded condition per rule; a larger one would not load at all."""
    for index, rule in enumerate(ruleset.rules):
        entries = core_pattern_entries(rule_pattern(rule, 0, ruleset))
        if entries > CORE_PATTERN_ENTRIES:
            errors.append(doc.error(("rules", index, "when"),
                                    f"this condition is too large for the rule engine: it takes {entries} of the "
                                    f"{CORE_PATTERN_ENTRIES} places one rule has (every all, any, not, 'in' and "
                                    "comparison takes 2); split the rule in two, or look the value up in a "
                                    "decision table"))


def _check_condition(spec: dict[str, Any], path: _Path, ruleset: Ruleset, doc: Document,
                     errors: list[RulesetError]) -> None:
    for key in ("all", "any"):
        if key in spec:
            for i, item in enumerate(spec[key]):
                _check_condition(item, path + (key, i), ruleset, doc, errors)
            return
    if "not" in spec:
        _check_condition(spec["not"], path + ("not",), ruleset, doc, errors)
        return
    for key in ("exists", "missing"):
        if key in spec:
            _need_fact(spec[key], ruleset, doc, path + (key,), errors)
            return
    fact = spec["fact"]
    _need_fact(fact, ruleset, doc, path + ("fact",), errors)
    (op, operand), = ((k, v) for k, v in spec.items() if k != "fact")
    operands = operand if op == "in" else [operand]
    fact_type = _known_facts(ruleset).get(fact)
    for i, value in enumerate(operands):
        where = path + ((op, i) if op == "in" else (op,))
        _check_operand(fact, fact_type, op, value, where, ruleset, doc, errors)


def _check_operand(fact: str, fact_type: str | None, op: str, value: object, path: _Path, ruleset: Ruleset,
                   doc: Document, errors: list[RulesetError]) -> None:
    param = None
    if isinstance(value, dict) and "param" in value:
        if not _need_param(value["param"], ruleset, doc, path + ("param",), errors):
            return
        param = value["param"]
        value = ruleset.param(param)
    elif isinstance(value, dict):
        _need_fact(value["fact"], ruleset, doc, path + ("fact",), errors)
        other = _known_facts(ruleset).get(value["fact"])
        if fact_type and other and (fact_type in NUMERIC) != (other in NUMERIC):
            errors.append(doc.error(path, f"'{fact}' ({fact_type}) cannot be compared with '{value['fact']}' "
                                          f"({other})"))
        return
    problem = _type_problem(fact, fact_type, op, value)
    if problem is None:
        return
    if param is None:
        errors.append(doc.error(path, problem))
    else:  # the wrong text is the parameter's value: say so there, with the use that fixes its type
        at = doc.error(("parameters", param, "value"), f"parameter '{param}' is {value!r}, which its uses cannot take:")
        use = f"line {doc.locate(path)[0]} ({'.'.join(map(str, path))}): {problem}"
        errors.append(_ParameterMisuse(at.file, at.line, at.column, at.path, at.message, use))


@dataclass(frozen=True)
class _ParameterMisuse(RulesetError):
    """One use that a parameter's value does not fit; merged per parameter into one error at its value."""

    use: str = ""


def _type_problem(fact: str, fact_type: str | None, op: str, value: object) -> str | None:
    if fact_type is None:
        return None
    if op in ("gt", "gte", "lt", "lte") and fact_type not in NUMERIC | {"date"}:
        return f"'{op}' compares numbers, but '{fact}' is {fact_type}"
    if fact_type in NUMERIC and not _is_number(value):
        return f"expected a number to compare with '{fact}', found {value!r}"
    if fact_type == "boolean" and not isinstance(value, bool):
        return f"'{fact}' is true or false, found {value!r}"
    if fact_type == "string" and not isinstance(value, str):
        return f"'{fact}' is text, found {value!r}"
    return None


def _merge_parameter_misuse(errors: list[RulesetError]) -> list[RulesetError]:
    """One error per misused parameter, at its value, listing every use."""
    misuses: dict[tuple[str, _Path], list[_ParameterMisuse]] = {}
    others = []
    for error in errors:
        if isinstance(error, _ParameterMisuse):
            misuses.setdefault((error.file, error.path), []).append(error)
        else:
            others.append(error)
    merged = [RulesetError(uses[0].file, uses[0].line, uses[0].column, uses[0].path,
                           f"{uses[0].message} {'; '.join(misuse.use for misuse in uses)}")
              for uses in misuses.values()]
    return others + merged


def _check_consequences(rule: Rule, path: _Path, ruleset: Ruleset, doc: Document, errors: list[RulesetError]) -> None:
    facts = _known_facts(ruleset)
    for d in rule.derive:
        where = path + ("derive", d.fact)
        _need_fact(d.fact, ruleset, doc, where, errors)
        if d.fact in ruleset.facts and not ruleset.facts[d.fact].derived:
            errors.append(doc.error(where, f"'{d.fact}' is an input fact; only facts declared 'derived: true' "
                                           "may be set by rules"))
        if d.kind == "expr":
            _check_expression(d.source, where, ruleset, doc, errors)
        elif d.kind == "table":
            table, input_fact = d.source
            if table not in ruleset.tables:
                errors.append(doc.error(where + ("table",),
                                        f"unknown table '{table}'{_suggest(table, ruleset.tables)}"))
            _need_fact(input_fact, ruleset, doc, where + ("input",), errors)
            if facts.get(input_fact) and facts[input_fact] not in NUMERIC:
                errors.append(doc.error(where + ("input",), f"a table looks up a number; '{input_fact}' is "
                                                            f"{facts[input_fact]}"))
        elif d.kind == "param":
            _need_param(d.source, ruleset, doc, where + ("param",), errors)
        elif d.kind == "fact":
            _need_fact(d.source, ruleset, doc, where + ("fact",), errors)
    for d in rule.append:
        where = path + ("append", d.fact)
        _need_fact(d.fact, ruleset, doc, where, errors)
        if facts.get(d.fact) not in (None, "list"):
            errors.append(doc.error(where, f"'append' adds to a list fact; '{d.fact}' is {facts[d.fact]}"))
        if d.fact in ruleset.facts and not ruleset.facts[d.fact].derived:
            errors.append(doc.error(where, f"'{d.fact}' must be declared 'derived: true' to be set by rules"))
        _check_template(d.source, where, ruleset, doc, errors)
    if rule.decide:
        _check_decision(rule, path + ("decide",), ruleset, doc, errors)


def _check_decision(rule: Rule, path: _Path, ruleset: Ruleset, doc: Document, errors: list[RulesetError]) -> None:
    decide, raw = rule.decide, _data(doc)["rules"][[r.id for r in ruleset.rules].index(rule.id)]["then"]["decide"]
    assert decide is not None  # called only for a rule that decides
    _check_template(decide.summary, path + ("summary",), ruleset, doc, errors)
    _check_template(decide.detail, path + ("detail",), ruleset, doc, errors)
    if "override_reasons" in raw and raw["override_reasons"] not in ruleset.metadata.get("override_reasons", {}):
        errors.append(doc.error(path + ("override_reasons",),
                                f"unknown override reason set '{raw['override_reasons']}'"))
    suggestion = decide.suggestion
    if suggestion is None:
        return
    _check_template(suggestion.label, path + ("suggestion", "label"), ruleset, doc, errors)
    if not ruleset.medication:
        errors.append(doc.error(path + ("suggestion",), "a suggestion needs the ruleset's 'medication'"))
    if suggestion.action in DOSED_ACTIONS and not suggestion.dose_fact:
        errors.append(doc.error(path + ("suggestion",), f"a '{suggestion.action}' suggestion needs 'dose'"))
    if suggestion.action in ORDER_ACTIONS and not suggestion.order_fact:
        errors.append(doc.error(path + ("suggestion",), f"a '{suggestion.action}' suggestion needs 'order'"))
    for key, fact in (("dose", suggestion.dose_fact), ("order", suggestion.order_fact)):
        if fact:
            _need_fact(fact, ruleset, doc, path + ("suggestion", key), errors)
    if suggestion.dose_fact and _known_facts(ruleset).get(suggestion.dose_fact) not in (None, *NUMERIC):
        errors.append(doc.error(path + ("suggestion", "dose"), "the dose must be a number fact"))


def _check_expression(text: str, path: _Path, ruleset: Ruleset, doc: Document, errors: list[RulesetError]) -> None:
    try:
        expression = parse_expression(text)
    except ExpressionError as exc:
        errors.append(doc.error(path, str(exc)))
        return
    known = set(_known_facts(ruleset)) | set(ruleset.parameters)
    for name in sorted(expression.names - known):
        errors.append(doc.error(path, f"unknown name '{name}' in the expression{_suggest(name, known)}"))
    for name in sorted(expression.names & set(ruleset.parameters) & set(ruleset.facts)):
        errors.append(doc.error(path, f"'{name}' is both a fact and a parameter; rename one"))


def _check_template(text: str, path: _Path, ruleset: Ruleset, doc: Document, errors: list[RulesetError]) -> None:
    try:
        names = template_names(text)
    except jinja2.TemplateSyntaxError as exc:
        errors.append(doc.error(path, f"template error: {exc.message}"))
        return
    known = set(_known_facts(ruleset)) | set(ruleset.parameters) | set(TEMPLATE_GLOBALS)
    for name in sorted(names - known):
        errors.append(doc.error(path, f"unknown name '{name}' in the text{_suggest(name, known)}"))


# --- rules that can never fire ----------------------------------------------------------------


def _check_never_fires(ruleset: Ruleset, doc: Document, errors: list[RulesetError]) -> None:
    """An 'all' whose comparisons on one fact leave no possible value (e.g. > 5 and < 3)."""
    for index, rule in enumerate(ruleset.rules):
        if isinstance(rule.when, AllOf) or isinstance(rule.when, Compare):
            items = rule.when.items if isinstance(rule.when, AllOf) else (rule.when,)
            if _contradiction(items, ruleset) or _exists_and_missing(items):
                errors.append(doc.error(("rules", index, "when"),
                                        f"rule '{rule.id}' can never fire: its conditions contradict each other"))


def _exists_and_missing(items: tuple[Condition, ...]) -> bool:
    exists = {i.fact for i in items if isinstance(i, Exists)}
    return bool(exists & {i.fact for i in items if isinstance(i, Missing)})


def _contradiction(items: tuple[Condition, ...], ruleset: Ruleset) -> bool:
    bounds: dict[str, list[tuple[float, bool]]] = {}
    for item in items:
        if not isinstance(item, Compare) or item.op not in ("gt", "gte", "lt", "lte", "eq"):
            continue
        value = _constant(item.operand, ruleset)
        if not _is_number(value):
            continue
        low, high = bounds.setdefault(item.fact, [(float("-inf"), True), (float("inf"), True)])
        if item.op in ("gt", "gte", "eq"):
            candidate = (value, item.op != "gt")
            if candidate[0] > low[0] or (candidate[0] == low[0] and not candidate[1]):
                bounds[item.fact][0] = candidate
        if item.op in ("lt", "lte", "eq"):
            candidate = (value, item.op != "lt")
            if candidate[0] < high[0] or (candidate[0] == high[0] and not candidate[1]):
                bounds[item.fact][1] = candidate
    for (lowest, low_closed), (highest, high_closed) in bounds.values():
        if lowest > highest or (lowest == highest and not (low_closed and high_closed)):
            return True
    return False


def _constant(operand: Operand | tuple[Operand, ...], ruleset: Ruleset) -> Any:
    if isinstance(operand, Literal):
        return operand.value
    if isinstance(operand, ParamRef) and operand.name in ruleset.parameters:
        return ruleset.param(operand.name)
    return None


# --- strata -----------------------------------------------------------------------------------


def _check_strata(ruleset: Ruleset, doc: Document, errors: list[RulesetError]) -> None:
    if len({r.id for r in ruleset.rules}) != len(ruleset.rules):
        return  # duplicate ids are reported already; strata are keyed by id
    try:
        compute_strata(ruleset)
    except CycleError as exc:
        first = [r.id for r in ruleset.rules].index(exc.rules[0])
        errors.append(doc.error(("rules", first), "derivations form a cycle: " + " -> ".join(exc.rules)))


# --- tests ------------------------------------------------------------------------------------


def _check_tests(ruleset: Ruleset, tests: list[dict[str, Any]], doc: Document, errors: list[RulesetError]) -> None:
    facts = _known_facts(ruleset)
    for index, test in enumerate(tests):
        for name in test.get("facts", {}):
            if name not in facts:
                errors.append(doc.error(("tests", index, "facts", name),
                                        f"unknown fact '{name}' in test{_suggest(name, facts)}"))
        for name in test.get("expect", {}).get("facts", {}):
            if name not in facts:
                errors.append(doc.error(("tests", index, "expect", "facts", name),
                                        f"unknown fact '{name}' in test{_suggest(name, facts)}"))


# --- against the site mapping -------------------------------------------------------------------


def check_against_mapping(ruleset: Ruleset, doc: Document, fact_types: dict[str, str], mapping_file: str,
                          medications: Collection[str]) -> list[RulesetError]:
    """Input facts the site mapping never produces would always be missing: say so when loading, not at the bedside."""
    errors: list[RulesetError] = []
    compatible = {"number": {"number", "integer"}, "integer": {"integer"}}
    for name, spec in ruleset.facts.items():
        if spec.derived:
            continue
        produced = fact_types.get(name)
        if produced is None:
            errors.append(doc.error(("facts", name), f"input fact '{name}' is not produced by the site mapping "
                                                     f"{mapping_file}{_suggest(name, fact_types)}"))
        elif produced not in compatible.get(spec.type, {spec.type}):
            errors.append(doc.error(("facts", name, "type"), f"'{name}' is {spec.type} here but the site mapping "
                                                             f"gives {produced}"))
    concept = ruleset.medication.concept if ruleset.medication else None
    if concept and concept not in medications:
        errors.append(doc.error(("medication", "concept"), f"the site mapping {mapping_file} has no medication "
                                                          f"'{concept}'{_suggest(concept, medications)}"))
    return errors
