"""The decision pipeline: a record (or facts given by hand) + a ruleset + a date + a hook -> facts -> evaluation.

    resources, draft orders --facts_from_record--> Extraction --decide--> Evaluation (decisions, trace, missing)
    facts written by hand   --given_facts------/

Every caller decides through these two steps: the CDS Hooks service (webhook/hooks.py, which turns the decisions
into cards), the workbench, the therapy simulation, the version diff, the rulesets' own tests, the command line
and the audit replay. So a fact the site mapping reads, a bounded value (engine/certainty.py) or a reason a fact is
missing reaches the rules the same way wherever the question is asked. Reading the record depends only on the site
mapping, not on the ruleset: a caller that asks several versions about one record (the diff) reads it once.
Which released version answers a call on a date is engine/choice.py's `decide_in_effect`, on these same facts.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from . import fhir
from .certainty import Evaluator, evaluate_bounded
from .model import Evaluation, Ruleset

# The resource types a whole record holds: a test case, a cohort patient or a pasted Bundle is the patient's whole
# record, so "no such resource" there means "none", not "not fetched" (see fhir.extract_facts's `supplied`).
WHOLE_RECORD = frozenset({"Patient", "Observation", "Condition", "Procedure", "MedicationRequest"})


def facts_from_record(mapping: fhir.SiteMapping, resources: Iterable[dict[str, Any]], on: dt.date,
                      drafts: list[dict[str, Any]] | None = None, supplied: Iterable[str] = WHOLE_RECORD,
                      given: Mapping[str, Any] | None = None) -> fhir.Extraction:
    """The facts the site mapping reads from a patient's resources (and, for order hooks, the draft orders).

    `supplied`: the resource types that were looked for, even where none was found. `given`: facts written by hand
    (a test case's), which take the place of what the record says."""
    extraction = fhir.extract_facts(mapping, list(resources), on, draft_orders=drafts, supplied=set(supplied))
    if given:
        extraction.facts.update(given)
    return extraction


def given_facts(facts: Mapping[str, Any], reasons: Mapping[str, str] | None = None) -> fhir.Extraction:
    """Facts written by hand, with the reasons some are missing (a recorded decision keeps both)."""
    return fhir.Extraction(facts=dict(facts), problems=dict(reasons or {}))


def decide(engine: Evaluator, ruleset: Ruleset, facts: fhir.Extraction, on: dt.date | str,
           hook: str | None) -> Evaluation:
    """The ruleset's decisions on these facts, deciding for certain where bounded values allow it."""
    return evaluate_bounded(engine, ruleset, facts.facts, facts.possible, on, hook, facts.problems)
