"""FHIR R4 resources -> ruleset facts, driven entirely by a site mapping (rules/site/*.yaml).

Nothing here knows a protocol: codes, units, statuses and ULN tables come from the mapping, so correcting a local
code or adding a second protocol is a YAML edit. Every fact carries its provenance in `sources`; a value that
existed but could not be read is explained in `problems` and never guessed. The mapping is indexed once at load,
so extraction per request is dictionary lookups and one sort per concept.
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from typing import Any, NamedTuple

from .. import units
from ..uncertain import Possible, days
from .mapping import (
    CodedConcept,
    CodeIndex,
    Extraction,
    MedicationConcept,
    ObservationConcept,
    PatientAttribute,
    Score,
    SiteMapping,
)
from .values import (
    _NO_TIME,
    When,
    _codings,
    _completed,
    _first_when,
    _get,
    _is_number,
    _objects,
    _ref,
    _status_codes,
    _text,
    _when,
    _when_or_partial,
    is_fhir_id,
)

PATIENT_TOKEN = "{{context.patientId}}"
_BOUNDS = ("<", "<=", ">", ">=")  # Quantity.comparator values that bound a result ("ad" does not)

# "0-40", "0.0 - 40.0 <unit>", "<40", "<= 40", "≤40": the high number, then an optional unit.
_RANGE_TEXT = re.compile(
    r"^\s*(?:\d+(?:\.\d+)?\s*(?:-|–|—|~|to)\s*|(?:<=|≤|<)\s*)(\d+(?:\.\d+)?)\s*(.*?)\s*$", re.IGNORECASE)


class _Found(NamedTuple):
    """A resource matched to a concept, with its date and the code that matched (a named tuple: one is built per
    matched resource of every request, in under half a frozen dataclass's time)."""

    when: When | None
    resource: dict[str, Any]
    code: str


def _when_of(item: _Found) -> When:
    """The date of a match known to be dated: callers pass only matches they have checked."""
    assert item.when is not None
    return item.when


def _recent(found: list[_Found], limit: int) -> list[_Found]:
    """Newest first, undated last, cut to the history limit."""
    ordered = sorted(found, key=lambda f: f.when.instant if f.when else _NO_TIME, reverse=True)
    return ordered[:limit]


def _collect(index: CodeIndex, kept: Iterable[dict[str, Any]],
             date_of: Callable[[dict[str, Any]], When | None]) -> dict[str, list[_Found]]:
    """Group the kept resources by the concepts their `code` matches.

    Callers filter with a comprehension rather than pass a predicate: it runs for every resource of every request,
    and a call per resource costs more than the test itself."""
    found: dict[str, list[_Found]] = defaultdict(list)
    match = index.match
    for resource in kept:
        matches = match(resource.get("code"))
        if matches:
            when = date_of(resource)
            for concept, code in matches.items():
                found[concept].append(_Found(when, resource, code))
    return found


def _split_future(found: list[_Found], today: date) -> tuple[list[_Found], list[_Found]]:
    """Matches up to the evaluation date, and those after it, each in the order given (one pass)."""
    past: list[_Found] = []
    future: list[_Found] = []
    if found:  # most concepts match nothing in a record
        cutoff = today.isoformat()
        for item in found:
            (future if item.when is not None and item.when.day > cutoff else past).append(item)
    return past, future


def _ignored_note(ignored: list[_Found], why: str) -> str:
    """One line for many ignored resources, naming the first few."""
    refs = ", ".join(_ref(f.resource) for f in ignored[:3]) + (" ..." if len(ignored) > 3 else "")
    return f"{len(ignored)} result(s) {why} ignored ({refs})"


def _future_note(future: list[_Found], today: date) -> str:
    return _ignored_note(future, f"dated after the evaluation date {today}")


def _put(out: Extraction, fact: str | None, value: Any, source: str) -> None:
    if fact:
        out.facts[fact] = value
        out.sources[fact] = source
        out.problems.pop(fact, None)


def _put_possible(out: Extraction, fact: str | None, possible: Possible, source: str) -> None:
    if fact:
        out.facts.pop(fact, None)
        out.possible[fact] = possible
        out.sources[fact] = source
        out.problems.pop(fact, None)


def _problem(out: Extraction, fact: str | None, message: str) -> None:
    """Record why a fact is missing; a fact that has a value keeps it and gets no problem."""
    if fact and fact not in out.facts and fact not in out.possible:
        out.problems[fact] = message


# --- the public entry points --------------------------------------------------------------------


def resources_from(payload: Any) -> list[dict[str, Any]]:
    """Resources in a resource, a Bundle (with or without Bundle.type), a list or None; an OperationOutcome is none."""
    if isinstance(payload, list):
        return _resources_in(payload)
    if not isinstance(payload, dict):
        return []
    kind = payload.get("resourceType")
    if kind == "OperationOutcome":
        return []
    if kind == "Bundle" or (kind is None and "entry" in payload):
        return _resources_in([entry.get("resource") for entry in _objects(payload.get("entry"))])
    return [payload] if isinstance(kind, str) else []


def _resources_in(items: list[Any]) -> list[dict[str, Any]]:
    """`resources_from` of each item, in order. A plain resource, nearly every item of every request, is taken as
    it is rather than through a call and a list of one."""
    found: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("resourceType") if isinstance(item, dict) else None
        if isinstance(kind, str) and kind not in ("Bundle", "OperationOutcome"):
            found.append(item)
        else:
            found.extend(resources_from(item))
    return found


def prefetch_templates(mapping: SiteMapping) -> dict[str, str]:
    """CDS Hooks prefetch templates (R4 search syntax) for everything the mapping reads."""
    templates = {"patient": "Patient/" + PATIENT_TOKEN}
    for name, tokens in mapping.observation_search.items():
        templates[name] = (f"Observation?patient={PATIENT_TOKEN}&code={','.join(tokens)}"
                           f"&_sort=-date&_count={mapping.history_limit}")
    # Condition and procedure codes include ICD-10 prefixes and local codes, which a code search cannot express.
    if mapping.conditions:
        templates["conditions"] = f"Condition?patient={PATIENT_TOKEN}"
    if mapping.procedures:
        templates["procedures"] = f"Procedure?patient={PATIENT_TOKEN}"
    if mapping.medications:
        templates["medications"] = f"MedicationRequest?patient={PATIENT_TOKEN}"
    return templates


def draft_orders_mention(mapping: SiteMapping, concept: str, draft_orders: Any) -> bool:
    """Whether a draft MedicationRequest is for this medication; if not, order hooks can answer without fetching."""
    medication = mapping.medications[concept]
    return any(_mentions(mapping, medication, r) for r in _requests(resources_from(draft_orders)))


def extract_facts(mapping: SiteMapping, resources: list[dict[str, Any]], evaluation_date: date,
                  draft_orders: list[dict[str, Any]] | None = None, supplied: set[str] | None = None) -> Extraction:
    """Facts for the ruleset from a patient's resources.

    `supplied` names the resource types that were fetched, even when the fetch found nothing: only for those are
    "no" answers (has_..., counts) produced; otherwise absent means unknown. Default: the types present.
    """
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for resource in resources_from(resources):
        by_type[resource["resourceType"]].append(resource)
    fetched = set(by_type) | set(supplied or ())
    out = Extraction()
    birth = _extract_patient(mapping, by_type["Patient"], evaluation_date, out)
    context = _Context(evaluation_date, birth, mapping.history_limit)
    _extract_observations(mapping, by_type["Observation"], context, out)
    _extract_conditions(mapping, by_type["Condition"], "Condition" in fetched, context, out)
    _extract_procedures(mapping, by_type["Procedure"], "Procedure" in fetched, context, out)
    _extract_medications(mapping, _requests(by_type["MedicationRequest"]), "MedicationRequest" in fetched,
                         context, out)
    if draft_orders is not None:
        _extract_drafts(mapping, _requests(resources_from(draft_orders)), out)
    return out


@dataclass(frozen=True)
class _Context:
    today: date
    birth: tuple[date, date] | None  # the earliest and latest birth date the record allows
    limit: int


# --- Patient ------------------------------------------------------------------------------------


def _extract_patient(mapping: SiteMapping, patients: list[dict[str, Any]], today: date,
                     out: Extraction) -> tuple[date, date] | None:
    """Birth date and age in completed years; the span of possible birth dates is returned for age-dependent ULNs.

    A partial birthDate ("2016", "2016-10") still gives the age where every day it allows gives the same age."""
    if not patients:
        return None
    patient, facts = patients[0], (mapping.birth_date_fact, mapping.age_fact)
    for attribute in mapping.attributes.values():
        _extract_attribute(attribute, patient, out)
    written = patient.get("birthDate")
    birth = _when_or_partial(written)
    if birth is None or birth.day > today.isoformat():
        reason = "no birthDate" if written is None else f"birthDate {written!r} is not a past date"
        for fact in facts:
            _problem(out, fact, f"{reason} ({_ref(patient)})")
        return None
    first = date.fromisoformat(birth.day)
    last = min(date.fromisoformat(birth.last or birth.day), today)
    source = f"{_ref(patient)} birthDate {written}"
    why = f"birthDate '{written}' is partial ({_ref(patient)})"
    if first == last:
        _put(out, mapping.birth_date_fact, birth.day, source)
    else:
        _put_possible(out, mapping.birth_date_fact, Possible(str(written), why, days(first, last)), source)
    oldest, youngest = _completed(first, today, "years"), _completed(last, today, "years")
    ages = f"completed years from birthDate {written} ({_ref(patient)}) to {today}"
    if oldest == youngest:
        _put(out, mapping.age_fact, oldest, ages)
    else:
        _put_possible(out, mapping.age_fact, Possible(" or ".join(map(str, range(youngest, oldest + 1))), why,
                                                      tuple(range(youngest, oldest + 1))), ages)
    return first, last


def _extract_attribute(attribute: PatientAttribute, patient: dict[str, Any], out: Extraction) -> None:
    """True when the most specific part recorded has one of the codes; missing, with why, when nothing recorded
    decides it (no extension, or only an undecided code such as a broad category); false otherwise."""
    ref = _ref(patient)
    found = [e for e in _objects(patient.get("extension")) if e.get("url") == attribute.extension]
    parts = [e for extension in found for e in _objects(extension.get("extension"))]
    for url in attribute.parts:
        codings = [e["valueCoding"] for e in parts if e.get("url") == url and isinstance(e.get("valueCoding"), dict)]
        if not codings:
            continue
        recorded = ", ".join(_coding_text(c) for c in codings)
        if any(attribute.codes.match({"coding": [c]}) for c in codings):
            _put(out, attribute.fact, True, f"{ref} {url}: {recorded}")
        elif any(attribute.undecided.match({"coding": [c]}) for c in codings):
            _problem(out, attribute.fact, f"{ref} records {url} {recorded} only, which does not decide it")
        else:
            _put(out, attribute.fact, False, f"{ref} {url}: {recorded}")
        return
    _problem(out, attribute.fact, f"not recorded ({ref} has no coded {attribute.extension} extension)")


def _coding_text(coding: dict[str, Any]) -> str:
    code, display = _text(coding.get("code")) or "?", _text(coding.get("display"))
    return f"{code} ({display})" if display else code


# --- Observations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reading:
    """A value in the concept's unit, with the factor used, so the reference range converts the same way."""

    value: float | int
    factor: float
    unit: str | None
    text: str
    comparator: str | None = None  # "<", "<=", ">", ">=": the value is a bound, not the result

    def possible(self, observation: dict[str, Any]) -> Possible:
        """A bounded result as the interval it allows, e.g. '<20' -> [unbounded, 20)."""
        closed, below = self.comparator in ("<=", ">="), self.comparator in ("<", "<=")
        shown = f"{self.comparator}{units.show(self.value)}"
        why = f"the result is written '{self.text}', a bound ({_ref(observation)})"
        if below:
            return Possible(shown, why, high=self.value, high_closed=closed)
        return Possible(shown, why, low=self.value, low_closed=closed)


def _effective(observation: dict[str, Any]) -> When | None:
    # effectiveDateTime, which nearly every result has, is read before the others are even looked up
    return _when(observation.get("effectiveDateTime")) or _first_when(
        _get(observation, "effectivePeriod", "start"), observation.get("effectiveInstant"), observation.get("issued"))


def _extract_observations(mapping: SiteMapping, observations: list[dict[str, Any]], ctx: _Context,
                          out: Extraction) -> None:
    ignored = mapping.ignored_statuses
    found = _collect(mapping.observation_codes,
                     [o for o in observations if isinstance(o.get("status"), str) and o["status"] not in ignored],
                     _effective)
    for concept in mapping.observations.values():
        _extract_observation(mapping, concept, _recent(found.get(concept.name, []), ctx.limit), ctx, out)


def _extract_observation(mapping: SiteMapping, concept: ObservationConcept, found: list[_Found], ctx: _Context,
                         out: Extraction) -> None:
    """The newest result with a value decides; one whose value cannot be read is reported, not skipped over."""
    past, future = _split_future(found, ctx.today)
    undated = [f for f in past if f.when is None]
    notes = ([_future_note(future, ctx.today)] if future else []) + (
        [_ignored_note(undated, "without an effective date")] if undated else [])
    for item in past:
        if item.when is None:
            continue  # undated results sort last, so nothing dated comes after them
        if item.resource["status"] not in concept.statuses:
            notes.insert(0, _status_note(concept, item))
            break  # a newer result the site does not decide on: an older one must not decide instead
        reading = _read_observation(concept, item.resource)
        if reading is None:
            continue  # no value (dataAbsentReason): the previous result is still the latest known
        if isinstance(reading, str):
            notes.insert(0, reading)
            break
        source = f"{_ref(item.resource)} {item.code} {item.when.day}: {reading.text}"
        if reading.comparator:
            _put_possible(out, concept.value_fact, reading.possible(item.resource), source)
        else:
            _put(out, concept.value_fact, reading.value, source)
        _put(out, concept.date_fact, item.when.day, source)
        if concept.uln:
            _extract_uln(mapping, concept, item.resource, reading, ctx, out)
        return
    if notes:
        _problem(out, concept.value_fact, "; ".join(notes))
        _problem(out, concept.date_fact, "; ".join(notes))


def _status_note(concept: ObservationConcept, item: _Found) -> str:
    assert item.when is not None  # undated results are skipped before their status is looked at
    return (f"the latest result ({_ref(item.resource)}, {item.when.day}) is {item.resource['status']}; "
            f"the site decides on {concept.name} results that are {', '.join(sorted(concept.statuses))}")


def _read_observation(concept: ObservationConcept, observation: dict[str, Any]) -> _Reading | str | None:
    """A reading, a problem (str), or None when the result carries no value at all."""
    if concept.score is not None:
        return _read_score(concept.score, observation)
    assert concept.units is not None  # the schema gives a concept either a score or a unit
    return _read_quantity(concept.units, observation)


def _read_quantity(table: units.UnitTable, observation: dict[str, Any]) -> _Reading | str | None:
    quantity = observation.get("valueQuantity")
    if not isinstance(quantity, dict):
        if any(key.startswith("value") for key in observation):
            return f"the value is not a Quantity ({_ref(observation)})"
        return None
    if not _is_number(quantity.get("value")):
        return None
    comparator = quantity.get("comparator")
    if comparator is not None and comparator not in _BOUNDS:
        written = f"{comparator}{quantity['value']}"
        return f"the value is '{written}', not a number or a bound ({_ref(observation)})"
    unit, factor = units.quantity_unit(table, quantity)
    if factor is None:
        shown = f"unit '{unit}'" if unit else "a value without a unit"
        return f"{shown} cannot be converted to {table.canonical} ({_ref(observation)})"
    value = units.convert(quantity["value"], factor)
    text = f"{comparator or ''}{units.show(quantity['value'])} {unit}"
    if unit != table.canonical:
        text += f" -> {comparator or ''}{units.show(value)} {table.canonical}"
    return _Reading(value, factor, unit, text, comparator)


def _read_score(score: Score, observation: dict[str, Any]) -> _Reading | str | None:
    """valueInteger, valueQuantity.value, valueString, or a coded answer whose code or display is the score."""
    if "valueInteger" in observation:
        value = observation["valueInteger"]
    elif isinstance(observation.get("valueQuantity"), dict):
        value = observation["valueQuantity"].get("value")
    elif "valueCodeableConcept" in observation:
        value = _coded_score(score, observation["valueCodeableConcept"])
    elif "valueString" in observation:
        value = _integer_text(observation["valueString"])
    else:
        return None
    if not _is_number(value) or not float(value).is_integer() or not score.low <= value <= score.high:
        return f"the value is not a score from {score.low} to {score.high} ({_ref(observation)})"
    return _Reading(int(value), 1.0, None, str(int(value)))


def _coded_score(score: Score, concept: Any) -> int | None:
    codings = list(_codings(concept))
    for coding in codings:
        if _text(coding.get("code")) in score.answers:
            return score.answers[coding["code"]]
    texts = [coding.get(key) for coding in codings for key in ("code", "display")]
    texts += [c.get("text") for c in _objects(concept)]
    return next((n for n in map(_integer_text, texts) if n is not None), None)


def _integer_text(text: Any) -> int | None:
    return int(text.strip()) if isinstance(text, str) and text.strip().isdigit() else None


# --- Upper limit of normal ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Uln:
    value: float
    label: str  # the source fact: which kind of source was used
    source: str  # provenance detail


def _extract_uln(mapping: SiteMapping, concept: ObservationConcept, observation: dict[str, Any], reading: _Reading,
                 ctx: _Context, out: Extraction) -> None:
    """The result's own range, else its range text, else the site table's age band: the card names which."""
    # only called for a concept with a ULN, and the schema allows one only with a unit (never with a score)
    assert concept.uln is not None and concept.units is not None
    ranges = list(_applicable_ranges(mapping, observation, ctx))
    found = (_uln_from_range(concept.units, ranges, reading, observation)
             or _uln_from_text(concept.units, ranges, reading, observation)
             or _uln_from_table(concept, ctx))
    spec = concept.uln
    if isinstance(found, str):
        _problem(out, spec.fact, found)
        _problem(out, spec.source_fact, found)
        return
    _put(out, spec.fact, found.value, found.source)
    _put(out, spec.source_fact, found.label, found.source)


def _applicable_ranges(mapping: SiteMapping, observation: dict[str, Any], ctx: _Context) -> Iterator[dict[str, Any]]:
    """Reference ranges of the normal type (or untyped) whose age band, if any, holds the patient."""
    for entry in _objects(observation.get("referenceRange")):
        kind = entry.get("type")
        if kind is not None and not (_status_codes(kind) & mapping.range_types):
            continue
        if entry.get("age") is not None and not _age_within(mapping, entry["age"], ctx):
            continue
        yield entry


def _age_within(mapping: SiteMapping, age: Any, ctx: _Context) -> bool:
    """Inclusive bounds, each compared with the patient's completed age in the bound's own unit."""
    if ctx.birth is None or not isinstance(age, dict):
        return False
    checks: tuple[tuple[str, Callable[[int, Any], bool]], ...] = (("low", lambda a, b: a >= b),
                                                                  ("high", lambda a, b: a <= b))
    for bound, inside in checks:
        quantity = age.get(bound)
        if not isinstance(quantity, dict) or not _is_number(quantity.get("value")):
            continue
        written = (_text(quantity.get("code")), _text(quantity.get("unit")))
        unit = next((mapping.age_units[u] for u in written if u is not None and u in mapping.age_units), None)
        if unit is None or not all(inside(_completed(b, ctx.today, unit), quantity["value"]) for b in ctx.birth):
            return False  # a range applies only if it holds for every birth date the record allows
    return True


def _uln_from_range(table: units.UnitTable, ranges: list[dict[str, Any]], reading: _Reading,
                    observation: dict[str, Any]) -> _Uln | None:
    for entry in ranges:
        high = entry.get("high")
        if not isinstance(high, dict) or not _is_number(high.get("value")):
            continue
        unit, factor = units.quantity_unit(table, high)
        if unit is None:  # a bound without a unit is in the result's unit
            unit, factor = reading.unit, reading.factor
        value = units.convert(high["value"], factor) if factor is not None else 0.0
        if value <= 0:  # an unconvertible or zero limit cannot be divided by
            continue
        return _Uln(value, "reference range on the result",
                    f"{_ref(observation)} referenceRange.high {units.show(high['value'])} {unit}"
                    + _converted(value, unit, table.canonical))
    return None


def _uln_from_text(table: units.UnitTable, ranges: list[dict[str, Any]], reading: _Reading,
                   observation: dict[str, Any]) -> _Uln | None:
    for entry in ranges:
        match = _RANGE_TEXT.match(entry["text"]) if isinstance(entry.get("text"), str) else None
        if match is None:
            continue
        written, unit = match.group(1), match.group(2) or reading.unit
        factor = table.factor(match.group(2)) if match.group(2) else reading.factor
        value = units.convert(float(written), factor) if factor is not None else 0.0
        if value <= 0:
            continue
        return _Uln(value, "reference range text on the result",
                    f"{_ref(observation)} referenceRange.text '{entry['text']}'"
                    + _converted(value, unit, table.canonical))
    return None


def _uln_from_table(concept: ObservationConcept, ctx: _Context) -> _Uln | str:
    spec = concept.uln
    assert spec is not None and concept.units is not None  # checked by _extract_uln, the only caller
    if not spec.bands:
        return f"no usable reference range on the result and no site table for {concept.name}"
    if ctx.birth is None:
        return "no usable reference range on the result, and no birth date to choose a site-table age band"
    ages = sorted({_completed(b, ctx.today, "years") for b in ctx.birth})
    bands = {id(band): band for band in (next((b for b in spec.bands if b.low <= age < b.high), None)
                                          for age in ages)}
    if len(bands) > 1:
        return (f"no usable reference range on the result, and the partial birth date leaves age "
                f"{' or '.join(map(str, ages))}, in different bands of site table '{spec.table}'")
    band = next(iter(bands.values()))
    if band is None:
        return (f"no usable reference range on the result, and site table '{spec.table}' has no band for age "
                f"{' or '.join(map(str, ages))}")
    assert spec.column is not None  # the schema requires a column with a table, and bands come from the table
    value = band.values[spec.column]
    return _Uln(value, f"site table, {band.label}",
                f"site table '{spec.table}', {band.label}: {units.show(value)} {concept.units.canonical}")


def _converted(value: float, unit: str | None, canonical: str) -> str:
    return f" -> {units.show(value)} {canonical}" if unit != canonical else ""


# --- Conditions ---------------------------------------------------------------------------------


def _onset(condition: dict[str, Any]) -> When | None:
    for value in (condition.get("onsetDateTime"), _get(condition, "onsetPeriod", "start"),
                  condition.get("recordedDate")):
        found = _when_or_partial(value)
        if found is not None:
            return found
    return None


def _extract_conditions(mapping: SiteMapping, conditions: list[dict[str, Any]], supplied: bool, ctx: _Context,
                        out: Extraction) -> None:
    excluded = mapping.excluded_verification
    found = _collect(mapping.condition_codes,
                     [c for c in conditions if not (_status_codes(c.get("verificationStatus")) & excluded)], _onset)
    for concept in mapping.conditions.values():
        past, future = _split_future(_recent(found.get(concept.name, []), ctx.limit), ctx.today)
        if supplied:
            _condition_flags(mapping, concept, past, len(conditions), out)
        _latest_date(out, concept.facts.get("latest_onset"), past, future, ctx.today, "onset")


def _condition_flags(mapping: SiteMapping, concept: CodedConcept, past: list[_Found], supplied_count: int,
                     out: Extraction) -> None:
    """`present` and `active`: produced only when Conditions were fetched, so False means "looked, none"."""
    none_found = f"no matching Condition among {supplied_count} supplied"
    if "present" in concept.facts:
        _put(out, concept.facts["present"], bool(past), _describe(past[0]) if past else none_found)
    if "active" in concept.facts:
        active = [f for f in past if _is_active(mapping, f.resource)]
        if active:
            source = _describe(active[0])
        else:
            source = f"{len(past)} matching Condition(s), none active" if past else none_found
        _put(out, concept.facts["active"], bool(active), source)


def _is_active(mapping: SiteMapping, condition: dict[str, Any]) -> bool:
    status = _status_codes(condition.get("clinicalStatus"))
    return bool(status & mapping.active_clinical) or (not status and mapping.missing_clinical_status_is_active)


def _describe(item: _Found) -> str:
    status = sorted(_status_codes(item.resource.get("clinicalStatus")))
    when = f" {item.when.written or item.when.day}" if item.when else ""
    return f"{_ref(item.resource)} {item.code}{when}" + (f" ({', '.join(status)})" if status else "")


def _latest_date(out: Extraction, fact: str | None, past: list[_Found], future: list[_Found], today: date,
                 what: str) -> None:
    """The newest date among matches (they arrive newest first); say why when matches exist but none is dated."""
    dated = [f for f in past if f.when is not None]
    if dated:
        _put_latest(out, fact, dated, today, f"latest {what} of {len(past)} match(es)")
    elif past:
        _problem(out, fact, f"{_ref(past[0].resource)} matches but has no {what} date")
    elif future:
        _problem(out, fact, _future_note(future, today))


def _put_latest(out: Extraction, fact: str | None, dated: list[_Found], today: date, what: str) -> None:
    """The latest of the dates; where partial dates leave it open, every day it may be (engine.certainty)."""
    first = max(_when_of(f).day for f in dated)
    last = min(max(_when_of(f).last or _when_of(f).day for f in dated), today.isoformat())
    newest = max(dated, key=lambda f: (_when_of(f).last or _when_of(f).day, _when_of(f).day))
    if last <= first:
        _put(out, fact, first, f"{_describe(newest)}: {what}")
        return
    partial = [f for f in dated if f.when is not None and f.when.last is not None and f.when.last >= first]
    alone = len(partial) == 1 and _when_of(partial[0]).day == first
    why = "partial date " + ", ".join(f"'{_when_of(f).written}' ({_ref(f.resource)})" for f in partial[:3])
    _put_possible(out, fact, Possible(_when_of(partial[0]).written if alone else f"{first} to {last}", why,
                                      days(date.fromisoformat(first), date.fromisoformat(last))),
                  f"{_describe(newest)}: {what}")


# --- Procedures ---------------------------------------------------------------------------------


def _performed(procedure: dict[str, Any]) -> When | None:
    for value in (procedure.get("performedDateTime"), _get(procedure, "performedPeriod", "start")):
        found = _when_or_partial(value)
        if found is not None:
            return found
    return None


def _extract_procedures(mapping: SiteMapping, procedures: list[dict[str, Any]], supplied: bool, ctx: _Context,
                        out: Extraction) -> None:
    statuses = mapping.procedure_statuses
    found = _collect(mapping.procedure_codes, [p for p in procedures if _text(p.get("status")) in statuses],
                     _performed)
    for concept in mapping.procedures.values():
        past, future = _split_future(_recent(found.get(concept.name, []), ctx.limit), ctx.today)
        if supplied and "count" in concept.facts:
            refs = ", ".join(_describe(f) for f in past[:5]) + (" ..." if len(past) > 5 else "")
            source = f"{len(past)} completed matching Procedure(s) among {len(procedures)} supplied"
            _put(out, concept.facts["count"], len(past), source + (f": {refs}" if refs else ""))
        _latest_date(out, concept.facts.get("latest_date"), past, future, ctx.today, "performed date")


# --- MedicationRequests -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dose:
    daily: float  # in the concept's dose unit per day
    per_day: float  # administrations per day
    text: str


@dataclass(frozen=True)
class _Order:
    mapping: SiteMapping
    concept: MedicationConcept
    resource: dict[str, Any]
    authored: When | None  # authoredOn
    start: When | None

    @cached_property
    def dose(self) -> _Dose | str:
        """The daily dose, or the problem when it cannot be read. Read when first asked for: only the current order
        and the orders back to the last dose change need it, and reading one costs more than the rest of an order."""
        return _order_dose(self.mapping, self.concept, self.resource)


def _requests(resources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in resources if isinstance(r, dict) and r.get("resourceType") == "MedicationRequest"]


def _mentions(mapping: SiteMapping, concept: MedicationConcept, request: dict[str, Any]) -> bool:
    """The medication is ours by a mapped code, or by a name pattern in its text or a coding's display."""
    return concept.name in _mentioned(mapping, request)


def _mentioned(mapping: SiteMapping, request: dict[str, Any]) -> set[str]:
    """The medication concepts a request is for (see `_mentions`), found together: each medication's codes are
    matched and its texts casefolded once, not once per concept."""
    found: set[str] = set()
    for medication in _medication_concepts(request):
        found.update(mapping.medication_codes.match(medication))
        written = [medication.get("text")] + [c.get("display") for c in _codings(medication)]
        texts = [t.casefold() for t in written if isinstance(t, str)]
        found.update(c.name for c in mapping.medications.values() if any(p in t for t in texts for p in c.patterns))
    return found


def _medication_concepts(request: dict[str, Any]) -> list[dict[str, Any]]:
    """medicationCodeableConcept, and for medicationReference its display and a contained Medication's code."""
    found = [c for c in [request.get("medicationCodeableConcept")] if isinstance(c, dict)]
    reference = request.get("medicationReference")
    if isinstance(reference, dict):
        if isinstance(reference.get("display"), str):
            found.append({"text": reference["display"]})
        target = reference.get("reference")
        for contained in _objects(request.get("contained")):
            if isinstance(target, str) and target == "#" + str(contained.get("id")):
                found.extend(c for c in [contained.get("code")] if isinstance(c, dict))
    return found


def _order(mapping: SiteMapping, concept: MedicationConcept, request: dict[str, Any], authored: When | None) -> _Order:
    return _Order(mapping, concept, request, authored, _order_start(request, authored))


def _order_start(request: dict[str, Any], authored: When | None) -> When | None:
    """Earliest dosage boundsPeriod.start, else authoredOn."""
    written = [_when(_get(d, "timing", "repeat", "boundsPeriod", "start"))
               for d in _objects(request.get("dosageInstruction"))]
    starts = [s for s in written if s is not None]
    return min(starts) if starts else authored


def _extract_medications(mapping: SiteMapping, requests: list[dict[str, Any]], supplied: bool, ctx: _Context,
                         out: Extraction) -> None:
    # Each order's authoredOn is read once here, not again for every concept and for sorting.
    history = [(r, _when(r.get("authoredOn"))) for r in requests if _text(r.get("status")) in mapping.history_statuses]
    existing = [(r, authored, _mentioned(mapping, r)) for r, authored in history
                if not _written_after(authored, ctx.today.isoformat())]
    for concept in mapping.medications.values():
        mine = [(r, authored) for r, authored, mentioned in existing if concept.name in mentioned]
        orders = sorted((_order(mapping, concept, r, authored) for r, authored in mine), key=_order_recency,
                        reverse=True)[:ctx.limit]
        if supplied:
            _therapy_flags(mapping, concept, orders, len(requests), out)
        _therapy_start(concept, orders, out)
        _current_order(mapping, concept, orders, out)
        _last_dose_change(concept, orders, out)


def _start_of(order: _Order) -> When:
    """The start of an order known to have one: callers pass only orders they have checked."""
    assert order.start is not None
    return order.start


def _dose_of(order: _Order) -> _Dose:
    """The dose of an order whose dose was read: callers have checked it is not a problem."""
    assert not isinstance(order.dose, str)
    return order.dose


def _order_recency(order: _Order) -> tuple[datetime, datetime]:
    """By start, then by when it was written: two orders starting the same day are told apart by authoredOn."""
    authored = order.authored
    return (order.start.instant if order.start else _NO_TIME, authored.instant if authored else _NO_TIME)


def _written_after(authored: When | None, cutoff: str) -> bool:
    """An order authored after the evaluation date did not exist then (replays of past dates)."""
    return authored is not None and authored.day > cutoff


def _therapy_flags(mapping: SiteMapping, concept: MedicationConcept, orders: list[_Order], supplied_count: int,
                   out: Extraction) -> None:
    facts = concept.facts
    none_found = f"no matching MedicationRequest among {supplied_count} supplied"
    _put(out, facts.get("has_history"), bool(orders),
         f"{len(orders)} matching order(s), latest {_ref(orders[0].resource)}" if orders else none_found)
    current = [o for o in orders if _text(o.resource.get("status")) in mapping.current_statuses]
    _put(out, facts.get("on_therapy"), bool(current),
         f"{_ref(current[0].resource)} status {current[0].resource.get('status')}" if current
         else f"no {'/'.join(sorted(mapping.current_statuses))} order; {len(orders)} matching order(s)")


def _therapy_start(concept: MedicationConcept, orders: list[_Order], out: Extraction) -> None:
    dated = [o for o in orders if o.start is not None]
    if dated:
        first = min(dated, key=_start_of)
        _put(out, concept.facts.get("start_date"), _start_of(first).day,
             f"{_ref(first.resource)} starts {_start_of(first).day} (earliest of {len(dated)} order(s))")
    elif orders:
        _problem(out, concept.facts.get("start_date"), f"{_ref(orders[0].resource)} has no start or authoredOn date")


def _current_order(mapping: SiteMapping, concept: MedicationConcept, orders: list[_Order], out: Extraction) -> None:
    """The newest active (or on-hold) order: its id and daily dose."""
    current = next((o for o in orders if _text(o.resource.get("status")) in mapping.current_statuses), None)
    if current is None:
        return
    ref, status = _ref(current.resource), current.resource["status"]
    _put(out, concept.facts.get("current_status"), status, f"{ref} status {status}")
    if is_fhir_id(current.resource.get("id")):
        _put(out, concept.facts.get("active_order_id"), current.resource["id"], f"{ref} status {status}")
    else:
        _problem(out, concept.facts.get("active_order_id"), f"{ref}, the active order, has no valid FHIR id")
    if isinstance(current.dose, str):
        _problem(out, concept.facts.get("current_daily_dose"), current.dose)
    else:
        _put(out, concept.facts.get("current_daily_dose"), current.dose.daily, f"{ref}: {current.dose.text}")


def _last_dose_change(concept: MedicationConcept, orders: list[_Order], out: Extraction) -> None:
    """Walk back from the newest order while the daily dose stays the same; the change is where the run began."""
    fact = concept.facts.get("last_dose_change_date")
    dated = [o for o in orders if o.start is not None]
    if not dated:
        if orders:
            _problem(out, fact, f"{_ref(orders[0].resource)} has no start or authoredOn date")
        return
    latest = began = dated[0]
    for order in dated:
        if isinstance(order.dose, str):
            _problem(out, fact, f"cannot tell when the dose last changed: {order.dose}")
            return
        if order.dose.daily != _dose_of(latest).daily:  # latest is dated[0], read on the first pass
            break
        began = order
    _put(out, fact, _start_of(began).day,
         f"{_ref(began.resource)} starts {_start_of(began).day} at {units.show(_dose_of(began).daily)}/day"
         + (" (first order at this dose)" if len(dated) > 1 else " (the only order)"))


def _extract_drafts(mapping: SiteMapping, drafts: list[dict[str, Any]], out: Extraction) -> None:
    """The order being written: whether it is ours, its id, daily dose and frequency."""
    mentioned = [(r, _mentioned(mapping, r)) for r in drafts]
    for concept in mapping.medications.values():
        facts = concept.facts
        mine = [r for r, names in mentioned if concept.name in names]
        _put(out, facts.get("has_draft_order"), bool(mine),
             f"{_ref(mine[0])} in draftOrders" if mine else f"none of {len(drafts)} draft order(s) matches")
        if not mine:
            continue
        draft, ref = mine[0], _ref(mine[0])
        note = f" (first of {len(mine)} matching draft orders)" if len(mine) > 1 else ""
        if is_fhir_id(draft.get("id")):
            _put(out, facts.get("draft_order_id"), draft["id"], ref + note)
        else:
            _problem(out, facts.get("draft_order_id"), f"{ref}, the draft order, has no valid FHIR id{note}")
        dose = _order_dose(mapping, concept, draft)
        if isinstance(dose, str):
            _problem(out, facts.get("draft_daily_dose"), dose)
            _problem(out, facts.get("draft_frequency_per_day"), dose)
            continue
        _put(out, facts.get("draft_daily_dose"), dose.daily, f"{ref}: {dose.text}{note}")
        _put(out, facts.get("draft_frequency_per_day"), dose.per_day, f"{ref}: {dose.text}{note}")


# --- doses ----------------------------------------------------------------------------------------


def _order_dose(mapping: SiteMapping, concept: MedicationConcept, request: dict[str, Any]) -> _Dose | str:
    """The daily dose of an order. Several dosage instructions are added up only when they share a `sequence`
    (FHIR's mark of concurrent instructions, e.g. morning and evening); otherwise they may be a taper, not a guess."""
    ref = _ref(request)
    if concept.dose is None:
        return f"the mapping gives no dose unit for {concept.name}"
    dosages = _objects(request.get("dosageInstruction"))
    if not dosages:
        return f"no dosageInstruction ({ref})"
    if len(dosages) > 1 and (not _is_number(dosages[0].get("sequence"))
                             or any(d.get("sequence") != dosages[0]["sequence"] for d in dosages)):
        return f"several dosage instructions not marked concurrent; the daily dose is not guessed ({ref})"
    parts = [_dosage_dose(mapping, concept.dose, d, ref) for d in dosages]
    problem = next((p for p in parts if isinstance(p, str)), None)
    if problem is not None:
        return problem
    doses = [p for p in parts if not isinstance(p, str)]  # all of them, now that none is a problem
    return _Dose(units.tidy(sum(p.daily for p in doses)), units.tidy(sum(p.per_day for p in doses)),
                 " + ".join(p.text for p in doses))


def _dosage_dose(mapping: SiteMapping, table: units.UnitTable, dosage: dict[str, Any], ref: str) -> _Dose | str:
    quantity = _dose_quantity(dosage, ref)
    if isinstance(quantity, str):
        return quantity
    unit, factor = units.quantity_unit(table, quantity)
    if factor is None:
        return f"dose unit '{unit}' cannot be converted to {table.canonical} ({ref})"
    per_day = _administrations_per_day(mapping, dosage.get("timing"), ref)
    if isinstance(per_day, str):
        return per_day
    daily = units.convert(quantity["value"] * per_day, factor)
    per_day = units.tidy(per_day)
    return _Dose(daily, per_day, f"{units.show(quantity['value'])} {unit} x {units.show(per_day)}/day"
                                 f" = {units.show(daily)} {table.canonical}/day")


def _dose_quantity(dosage: dict[str, Any], ref: str) -> dict[str, Any] | str:
    """R4 doseAndRate[].doseQuantity (an object instead of an array too), else STU3 doseQuantity."""
    entries = _objects(dosage.get("doseAndRate"))
    quantities: list[dict[str, Any]] = [e["doseQuantity"] for e in entries if isinstance(e.get("doseQuantity"), dict)]
    if not quantities and isinstance(dosage.get("doseQuantity"), dict):
        quantities = [dosage["doseQuantity"]]
    if not quantities:
        if any("doseRange" in e for e in entries) or "doseRange" in dosage:
            return f"the dose is a range; it is not guessed ({ref})"
        return f"no dose quantity ({ref})"
    if any(q.get(key) != quantities[0].get(key) for q in quantities for key in ("value", "code", "unit")):
        return f"several different doses in one dosage instruction ({ref})"
    if not _is_number(quantities[0].get("value")):
        return f"the dose has no number ({ref})"
    return quantities[0]


def _administrations_per_day(mapping: SiteMapping, timing: Any, ref: str) -> float | str:
    """frequency per period, in times a day; no timing.repeat means no frequency, never an assumed once daily."""
    repeat = _get(timing, "repeat")
    if not isinstance(repeat, dict):
        return f"no timing.repeat, so no frequency ({ref})"
    times = repeat.get("timeOfDay")
    frequency = repeat.get("frequency", len(times) if isinstance(times, list) and times else 1)
    period, unit = repeat.get("period"), repeat.get("periodUnit")
    if not _is_number(frequency) or frequency <= 0 or not _is_number(period) or period <= 0:
        return f"timing.repeat has no usable frequency and period ({ref})"
    if "frequencyMax" in repeat or "periodMax" in repeat:
        return f"the frequency is a range (frequencyMax/periodMax); the daily dose is not guessed ({ref})"
    written = _text(unit)
    factor = mapping.periods_per_day.get(written) if written is not None else None
    if factor is None:
        return f"period unit '{unit}' is not in the mapping ({ref})"
    return units.per_day(frequency, period, factor)
