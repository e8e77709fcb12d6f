"""The ruleset and its results as plain data.

A loaded ruleset is immutable; an evaluation returns derived facts, decisions and the trace of
the rules that fired. Nothing here talks to durable-rules or HTTP.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

FACT_TYPES = ("number", "integer", "boolean", "string", "date", "list")
RESERVED_FACTS = {"today": "date", "hook": "string"}
OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in")


# --- the language -------------------------------------------------------------------------


@dataclass(frozen=True)
class Parameter:
    name: str
    value: Any
    unit: str
    description: str
    source: str  # "protocol", "drug label", "site policy", "site default[, pending <who> decision]"


@dataclass(frozen=True)
class FactSpec:
    """A fact the ruleset reads or derives, with its type and the checks applied on input."""

    name: str
    type: str
    description: str = ""
    unit: str = ""
    derived: bool = False
    observed_on: str | None = None  # the date fact that says when this value was observed
    max_age_days: str | None = None  # a parameter name: older values count as missing
    plausible: tuple[float, float] | None = None  # values outside count as missing


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class ParamRef:
    name: str


@dataclass(frozen=True)
class FactRef:
    name: str


Operand = Literal | ParamRef | FactRef


@dataclass(frozen=True)
class Compare:
    fact: str
    op: str
    operand: Operand | tuple[Operand, ...]  # a tuple of operands for "in"


@dataclass(frozen=True)
class Exists:
    fact: str


@dataclass(frozen=True)
class Missing:
    fact: str


@dataclass(frozen=True)
class AllOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    item: Condition


Condition = Compare | Exists | Missing | AllOf | AnyOf | Not


@dataclass(frozen=True)
class Band:
    """One row of a decision table: an interval of the input and what it maps to."""

    low: float | None  # None: unbounded
    high: float | None
    low_closed: bool
    high_closed: bool
    output: Any  # a literal or a ParamRef
    text: str  # the interval as written, e.g. "(20, 200]"
    line: int = 0

    def contains(self, x: float) -> bool:
        if self.low is not None and (x < self.low or (x == self.low and not self.low_closed)):
            return False
        if self.high is not None and (x > self.high or (x == self.high and not self.high_closed)):
            return False
        return True


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    input_unit: str
    output_unit: str
    bands: tuple[Band, ...]
    # (low, high, low_closed, high_closed): the bands must tile it, no gaps or overlaps
    domain: tuple[float | None, float | None, bool, bool]
    output_max: str | None = None  # a parameter no numeric output may exceed
    line: int = 0


@dataclass(frozen=True)
class Derivation:
    fact: str
    kind: str  # "value" | "param" | "fact" | "expr" | "table" | "template" (append only)
    source: Any  # the literal, the expression text, (table, input fact), or template text


# What a suggestion does to an order. A dose comes with a new order, a changed one and a restarted one; every action
# but `create` names an existing order: the draft being entered, or the active or on-hold one.
DOSED_ACTIONS = ("create", "update", "restart")
ORDER_ACTIONS = ("update", "stop", "hold", "restart")


@dataclass(frozen=True)
class SuggestionTemplate:
    action: str  # "create" | "update" | "stop" | "hold" | "restart"
    label: str  # template
    dose_fact: str | None = None  # the daily dose, in the medication's dose unit
    order_fact: str | None = None  # the id of the order to update, stop, hold or restart


@dataclass(frozen=True)
class DecisionTemplate:
    topic: str
    indicator: str  # info | warning | critical
    summary: str  # template
    detail: str  # template (markdown)
    suggestion: SuggestionTemplate | None = None
    override_reasons: tuple[dict[str, Any], ...] = ()
    links: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Rule:
    id: str
    explanation: str
    when: Condition
    derive: tuple[Derivation, ...] = ()
    append: tuple[Derivation, ...] = ()
    decide: DecisionTemplate | None = None
    line: int = 0
    cites: tuple[str, ...] = ()  # ids of the protocol clauses it implements (the ruleset's `clauses`)


@dataclass(frozen=True)
class Medication:
    """The protocol's drug as the ruleset names it: what its orders carry and the most a day may hold."""

    concept: str  # the site mapping's medication concept
    display: str
    dose_unit: str
    max_daily_dose_param: str  # the parameter holding the maximum daily dose
    frequency_per_day: int = 1
    coding: tuple[dict[str, Any], ...] = ()
    route: dict[str, Any] | None = None  # a coding

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Medication:
        """From the ruleset's `medication` section, already checked against the schema."""
        return cls(concept=data["concept"], display=data["display"], dose_unit=data["dose_unit"],
                   max_daily_dose_param=data["max_daily_dose"]["param"],
                   frequency_per_day=data.get("frequency_per_day") or 1,
                   coding=tuple(dict(c) for c in data.get("coding") or ()),
                   route=dict(data["route"]) if data.get("route") else None)


@dataclass(frozen=True)
class Ruleset:
    id: str
    version: str
    title: str
    description: str
    metadata: dict[str, Any]  # protocol, citations, authors, hooks, topic system, medication, clauses, evidence...
    parameters: dict[str, Parameter]
    facts: dict[str, FactSpec]
    tables: dict[str, Table]
    rules: tuple[Rule, ...]
    tests: tuple[dict[str, Any], ...]
    source_file: str = ""
    source_text: str = ""

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    @property
    def hooks(self) -> list[str]:
        return list(self.metadata.get("hooks", []))

    @cached_property
    def medication(self) -> Medication | None:
        """The protocol's drug; None for a ruleset that suggests no orders."""
        data = self.metadata.get("medication")
        return Medication.from_data(data) if data else None

    @property
    def max_daily_dose(self) -> float | None:
        """The most a suggestion may propose per day, in the medication's dose unit."""
        medication = self.medication
        if medication is None or medication.max_daily_dose_param not in self.parameters:
            return None
        limit = self.param(medication.max_daily_dose_param)
        return float(limit) if isinstance(limit, (int, float)) and not isinstance(limit, bool) else None

    @property
    def therapy_start(self) -> str | None:
        """The input date fact holding when the patient's therapy started, if the ruleset names one."""
        fact: str | None = self.metadata.get("therapy_start")
        return fact

    @property
    def topic_system(self) -> str:
        system: str = self.metadata.get("topic_system", f"urn:cdsrules:{self.id}:topic")
        return system

    def param(self, name: str) -> Any:
        return self.parameters[name].value


# --- results ------------------------------------------------------------------------------


@dataclass
class Suggestion:
    action: str  # "create" | "update" | "stop" | "hold" | "restart"
    label: str
    daily_dose: float | None = None  # in the medication's dose unit
    order_id: str | None = None


@dataclass
class Decision:
    rule_id: str
    topic: str
    indicator: str
    summary: str
    detail: str
    suggestion: Suggestion | None = None
    override_reasons: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Comparison:
    """One leaf of a rule's condition with the values it saw."""

    fact: str
    op: str
    actual: Any
    threshold: Any = None
    threshold_ref: str | None = None  # "param:<name>", "fact:<name>" or None for a literal


@dataclass
class Firing:
    rule_id: str
    explanation: str
    comparisons: list[Comparison]
    derived: dict[str, Any]


@dataclass
class Evaluation:
    ruleset_id: str
    version: str
    evaluation_date: str
    facts: dict[str, Any]  # inputs that were used plus everything derived
    decisions: list[Decision]
    trace: list[Firing]
    missing: dict[str, str]  # input fact -> why it was not used (absent, stale, implausible)
    bands: dict[str, str] = field(default_factory=dict)  # fact from a table -> the row it came from, as written

    @property
    def fired_rules(self) -> list[str]:
        return [f.rule_id for f in self.trace]

    def topics(self) -> list[str]:
        return [d.topic for d in self.decisions]
