"""Input facts typed and screened before they reach the engine.

A value of the wrong type is an error (the string "80" must never pass as 80); a value that is implausible,
undated or older than its window is dropped and recorded as missing with the reason, never used.
"""
from __future__ import annotations

import datetime as dt
import math
from typing import Any

from .errors import EvaluationError
from .model import FactSpec, Ruleset
from .templates import format_number
from .uncertain import SHOWN_TYPES


def prepare_inputs(ruleset: Ruleset, given: dict[str, Any], evaluation_date: dt.date, hook: str | None,
                   reasons: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """-> (facts for the engine, missing input fact -> why). Undeclared facts are ignored."""
    facts: dict[str, Any] = {"today": evaluation_date}
    if hook:
        facts["hook"] = hook
    missing: dict[str, str] = {}
    for name, spec in ruleset.facts.items():
        if spec.derived:
            continue
        if given.get(name) is None:
            missing[name] = reasons.get(name, "no value")
            continue
        try:
            facts[name] = coerce(spec, given[name])
        except NotUsable as exc:
            missing[name] = str(exc)
    for name, spec in ruleset.facts.items():
        if name in facts:
            reason = _screen(ruleset, spec, facts, evaluation_date)
            if reason:
                del facts[name]
                missing[name] = reason
    return facts, missing


class NotUsable(ValueError):
    """A value of the right type that cannot be used (e.g. infinite): missing, with this reason."""


def coerce(spec: FactSpec, value: Any) -> Any:
    kind = spec.type
    if kind in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EvaluationError(f"fact '{spec.name}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise NotUsable(f"value {value!r} is not a finite number")
        if kind == "integer" and not float(value).is_integer():
            raise EvaluationError(f"fact '{spec.name}' must be a whole number, got {value!r}")
        if kind == "integer":
            return value if isinstance(value, int) else int(value)  # an int subclass (ShownInteger) is kept
        return value
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "string" and isinstance(value, str):
        return value
    if kind == "list" and isinstance(value, list):
        return list(value)
    if kind == "date":
        return to_date(spec.name, value)
    raise EvaluationError(f"fact '{spec.name}' must be {kind}, got {value!r}")


def to_date(name: str, value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            pass
    raise EvaluationError(f"fact '{name}' must be a date (YYYY-MM-DD), got {value!r}")


def _screen(ruleset: Ruleset, spec: FactSpec, facts: dict[str, Any], evaluation_date: dt.date) -> str | None:
    """Why a typed value may not be used, or None."""
    value, unit = facts[spec.name], f" {spec.unit}" if spec.unit else ""
    if spec.plausible and not spec.plausible[0] <= value <= spec.plausible[1]:
        low, high = (format_number(v) for v in spec.plausible)
        return f"value {format_number(value)}{unit} is implausible (accepted range {low} to {high}{unit})"
    if spec.type == "date" and value > evaluation_date:
        return f"date {value.isoformat()} is after the evaluation date"
    if spec.max_age_days is None:
        return None
    observed = facts.get(spec.observed_on) if spec.observed_on is not None else None
    if observed is None:
        return f"value {format_number(value)}{unit} has no date ('{spec.observed_on}')"
    limit = ruleset.param(spec.max_age_days)
    age = (evaluation_date - observed).days
    if age > limit:
        return (f"last value {format_number(value)}{unit} on {observed.isoformat()} is {age} days old; "
                f"values older than {format_number(limit)} days ('{spec.max_age_days}') are not used")
    if age < 0:
        return f"value {format_number(value)}{unit} is dated {observed.isoformat()}, after the evaluation date"
    return None


# Values JSON takes as they are: the exact types, not their subclasses (a bounded value is an int, float or date
# subclass). Most facts are of these, and one set lookup is a third of the tests below.
_JSON_AS_IS = frozenset({bool, int, float, str, type(None)})


def to_json_value(value: Any) -> Any:
    if type(value) in _JSON_AS_IS:
        return value
    if isinstance(value, SHOWN_TYPES):
        return str(value)  # a bounded value, as the record wrote it
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, list):
        return [to_json_value(v) for v in value]
    return value
