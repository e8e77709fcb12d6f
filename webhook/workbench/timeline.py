"""Therapy timeline: a patient simulated day by day from day 0 under a version (engine.simulate), every suggestion
accepted; the measurement the rules titrate on, the dose level and each day's decisions on one time axis."""
from __future__ import annotations

import datetime as dt

from flask import render_template, request

from engine.errors import EvaluationError
from engine.model import Ruleset
from engine.simulate import Day, simulate
from webhook.workbench import svg
from webhook.workbench.patients import ScenarioError, parse_bundle
from webhook.workbench.views import chosen_version, parse_date, sandbox, snapshot, version_choices, workbench

MAX_DAYS = 120


def measured_facts(ruleset: Ruleset) -> list[str]:
    """Numeric input facts with an observation date: those read by a table whose rows name actions (text) first,
    which is what the rules titrate on, then the other tables' inputs, then the rest."""
    candidates = [name for name, spec in ruleset.facts.items()
                  if spec.type in ("number", "integer") and spec.observed_on and not spec.derived]
    tables = table_inputs(ruleset)

    def rank(name: str) -> int:
        table = tables.get(name)
        if table is None:
            return 2
        return 0 if any(isinstance(b.output, str) for b in ruleset.tables[table].bands) else 1

    return sorted(candidates, key=rank)


def table_inputs(ruleset: Ruleset) -> dict[str, str]:
    """Input fact -> the table it is looked up in."""
    found = {}
    for rule in ruleset.rules:
        for derivation in rule.derive:
            if derivation.kind == "table":
                found.setdefault(derivation.source[1], derivation.source[0])
    return found


def chart(ruleset: Ruleset, days: list[Day], fact: str, day0: dt.date):
    """The inline SVG of a simulated timeline."""
    spec = ruleset.facts[fact]
    seen = {}
    for day in days:
        when, value = day.facts.get(spec.observed_on), day.facts.get(fact)
        if when is not None and isinstance(value, (int, float)):
            seen[str(when)[:10]] = value
    points = sorted((svg.TimelinePoint((dt.date.fromisoformat(d) - day0).days, dt.date.fromisoformat(d), v)
                     for d, v in seen.items()), key=lambda p: p.day)
    points = [p for p in points if 0 <= p.day <= len(days) - 1]
    marks = [svg.TimelineMark(day.day, d.topic, d.indicator, d.summary) for day in days for d in day.decisions]
    events = [(day.day, "; ".join(day.applied)) for day in days if day.applied]
    table = table_inputs(ruleset).get(fact)
    shades = svg.shades_for(ruleset.tables[table], ruleset) if table else []
    unit = ruleset.medication.dose_unit if ruleset.medication else ""
    return svg.timeline_chart(len(days) - 1, f"{fact} ({spec.unit})" if spec.unit else fact, points,
                              [day.dose for day in days], f"dose ({unit}/day)", ruleset.max_daily_dose,
                              marks, events, shades)


def timeline() -> str:
    info = chosen_version(request.values.get("version"))
    form = request.values
    patients = workbench().cohort(info.ruleset_id if info else None)
    result, problem = None, ""
    if info is not None:
        try:
            result = _simulate(info.ruleset, form, patients)
        except (ScenarioError, EvaluationError, ValueError) as error:  # EvaluationError: e.g. past the time limit
            problem = str(error)
    facts = measured_facts(info.ruleset) if info else []
    return render_template("timeline.html", info=info, versions=version_choices(), form=form, patients=patients,
                           facts=facts, result=result, problem=problem)


def _simulate(ruleset: Ruleset, form, patients) -> dict:
    mapping = snapshot().mapping
    if mapping is None:
        raise ScenarioError("the site mapping does not load; see the rulesets page")
    if form.get("source") == "bundle":
        resources, day0, label = parse_bundle(form.get("bundle", ""), "pasted Bundle"), None, "pasted Bundle"
    else:
        patient = next((p for p in patients if p.name == form.get("patient", "")), patients[0] if patients else None)
        if patient is None:
            raise ScenarioError("no cohort patient to simulate")
        resources, day0, label = patient.resources, patient.day0, f"{patient.name}: {patient.description}"
    day0 = parse_date(form.get("day0"), day0) if day0 else parse_date(form.get("day0"), None)
    if day0 is None:
        raise ScenarioError("a pasted Bundle needs day 0 (the date the timeline starts)")
    count = min(max(int(form.get("days") or 50), 1), MAX_DAYS)
    measured = measured_facts(ruleset)
    fact = form.get("fact") if form.get("fact") in measured else (measured[0] if measured else None)
    days = simulate(ruleset, mapping, resources, day0, count, engine=sandbox())
    return {"label": label, "day0": day0, "days": days, "fact": fact,
            "chart": chart(ruleset, days, fact, day0) if fact else None}
