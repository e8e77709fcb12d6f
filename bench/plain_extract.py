"""A plain extraction of the rules' facts from FHIR R4 resources: what a user of a generic rules engine (ZEN) would
write instead of `engine.fhir`, for the zen section's extraction-plus-decisions figure.

It reads the same site mapping file (rules/site/fhir-r4.yaml, as YAML: every code, unit factor and status comes from
there) and does the obvious thing: the latest matching result, converted to the mapping's unit; its upper limit of
normal from the result's reference range, else from the mapping's table by age; a condition or procedure by code;
the protocol's drug orders by code or name. None of what `engine.fhir` adds for safety: no reasons why a fact is
missing, no bounded values ("<10"), no history limit, no checks of several dosage instructions. The zen section
compares the facts it gives with `engine.fhir`'s and reports the cases where they differ.
"""
from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from bench.common import RULES

MAPPING = RULES / "site" / "fhir-r4.yaml"


@lru_cache(maxsize=2)
def site_mapping(path: Path = MAPPING) -> dict:
    return yaml.safe_load(path.read_text())


def extract(resources: list[dict], today: dt.date, mapping: dict | None = None) -> dict[str, Any]:
    """Fact name -> value (dates as YYYY-MM-DD); a fact with nothing to say is left out."""
    mapping = mapping or site_mapping()
    codes = _Codes(mapping["systems"])
    by_type: dict[str, list[dict]] = {}
    for resource in resources:
        by_type.setdefault(resource.get("resourceType", ""), []).append(resource)
    facts: dict[str, Any] = {}
    _patient(mapping["patient"], codes, by_type.get("Patient", []), today, facts)
    for concept in mapping["observations"].values():
        _observation(mapping, codes, concept, by_type.get("Observation", []), today, facts)
    for concept in mapping["conditions"].values():
        _condition(mapping["condition_rules"], codes, concept, by_type.get("Condition", []), today, facts)
    for concept in mapping["procedures"].values():
        _procedure(mapping["procedure_rules"], codes, concept, by_type.get("Procedure", []), today, facts)
    for concept in mapping["medications"].values():
        _medication(mapping["medication_rules"], codes, concept, by_type.get("MedicationRequest", []), today, facts)
    return facts


class _Codes:
    def __init__(self, systems: dict):
        self.systems = systems

    def match(self, listed: list[dict], concept: dict | None) -> bool:
        for coding in (concept or {}).get("coding", []):
            for entry in listed:
                system = self.systems[entry["system"]]
                if coding.get("system") not in system["uris"]:
                    continue
                code = self._normal(system, str(coding.get("code", "")))
                wanted = [self._normal(system, str(c)) for c in entry["codes"]]
                if code in wanted or (entry.get("prefix") and any(code.startswith(w) for w in wanted)):
                    return True
        return False

    @staticmethod
    def _normal(system: dict, code: str) -> str:
        if system.get("ignore_dots"):
            code = code.replace(".", "")
        return code.upper() if system.get("ignore_case") else code


def _day(text: Any) -> str | None:
    return text[:10] if isinstance(text, str) and len(text) >= 10 else None


def _age(birth: str, today: dt.date) -> int:
    born = dt.date.fromisoformat(birth)
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _patient(rules: dict, codes: _Codes, patients: list[dict], today: dt.date, facts: dict) -> None:
    if not patients:
        return
    patient = patients[0]
    if patient.get("birthDate"):
        facts[rules["birth_date_fact"]] = patient["birthDate"]
        facts[rules["age_fact"]] = _age(patient["birthDate"], today)
    for attribute in rules.get("attributes", {}).values():
        parts = [part for extension in patient.get("extension", []) if extension.get("url") == attribute["extension"]
                 for part in extension.get("extension", [])]
        for url in attribute["parts"]:  # the most specific part recorded decides
            recorded = {"coding": [p["valueCoding"] for p in parts if p.get("url") == url and "valueCoding" in p]}
            if recorded["coding"]:
                if codes.match(attribute["codes"], recorded):
                    facts[attribute["fact"]] = True
                elif not codes.match(attribute.get("undecided", []), recorded):
                    facts[attribute["fact"]] = False
                break


def _observation(mapping: dict, codes: _Codes, concept: dict, observations: list[dict], today: dt.date,
                 facts: dict) -> None:
    statuses = mapping["observation_rules"]["statuses"]
    mine = [o for o in observations if o.get("status") in statuses and codes.match(concept["codes"], o.get("code"))
            and (_day(o.get("effectiveDateTime")) or "9999") <= today.isoformat()]
    if not mine:
        return
    latest = max(mine, key=lambda o: o["effectiveDateTime"])
    value = _score(concept["score"], latest) if "score" in concept else _quantity(concept, latest.get("valueQuantity"))
    if value is None:
        return
    facts[concept["value_fact"]] = value
    facts[concept["date_fact"]] = _day(latest["effectiveDateTime"])
    if "uln" in concept:
        _uln(mapping, concept, latest, facts)


def _quantity(concept: dict, quantity: dict | None) -> float | None:
    if not quantity or not isinstance(quantity.get("value"), (int, float)):
        return None
    unit = quantity.get("code") or quantity.get("unit")
    unit = concept.get("aliases", {}).get(unit, unit)
    factor = concept["conversions"].get(unit)
    return None if factor is None else quantity["value"] * factor


def _score(score: dict, observation: dict) -> int | None:
    if isinstance(observation.get("valueInteger"), int):
        return observation["valueInteger"]
    for coding in observation.get("valueCodeableConcept", {}).get("coding", []):
        if coding.get("code") in score["answers"]:
            return score["answers"][coding["code"]]
    return None


def _uln(mapping: dict, concept: dict, observation: dict, facts: dict) -> None:
    uln = concept["uln"]
    for reference in observation.get("referenceRange", []):
        high = _quantity(concept, reference.get("high"))
        if high is not None:
            facts[uln["fact"]], facts[uln["source_fact"]] = high, "reference range on the result"
            return
    age = facts.get(mapping["patient"]["age_fact"])
    if age is None:
        return
    for band in mapping["uln_tables"][uln["table"]]["bands"]:
        if band["from"] <= age < band["to"]:
            facts[uln["fact"]], facts[uln["source_fact"]] = band[uln["column"]], f"site table {uln['table']}"
            return


def _condition(rules: dict, codes: _Codes, concept: dict, conditions: list[dict], today: dt.date,
               facts: dict) -> None:
    def status(condition: dict, part: str) -> str | None:
        coding = condition.get(part, {}).get("coding", [])
        return coding[0].get("code") if coding else None

    mine = [c for c in conditions if status(c, "verificationStatus") not in rules["excluded_verification"]
            and codes.match(concept["codes"], c.get("code"))
            and (_day(c.get("onsetDateTime")) or "0000") <= today.isoformat()]
    wanted = concept["facts"]
    if "present" in wanted:
        facts[wanted["present"]] = bool(mine)
    if "active" in wanted:
        active = [c for c in mine if status(c, "clinicalStatus") in rules["active_clinical"]
                  or (status(c, "clinicalStatus") is None and rules.get("missing_clinical_status_is_active"))]
        facts[wanted["active"]] = bool(active)
    onsets = [d for d in (_day(c.get("onsetDateTime")) for c in mine) if d]
    if "latest_onset" in wanted and onsets:
        facts[wanted["latest_onset"]] = max(onsets)


def _procedure(rules: dict, codes: _Codes, concept: dict, procedures: list[dict], today: dt.date,
               facts: dict) -> None:
    def performed(p: dict) -> str | None:
        return _day(p.get("performedDateTime")) or _day(p.get("performedPeriod", {}).get("start"))

    mine = [p for p in procedures if p.get("status") in rules["statuses"]
            and codes.match(concept["codes"], p.get("code")) and (performed(p) or "0000") <= today.isoformat()]
    wanted = concept["facts"]
    if "count" in wanted:
        facts[wanted["count"]] = len(mine)
    dates = [d for d in (performed(p) for p in mine) if d]
    if "latest_date" in wanted and dates:
        facts[wanted["latest_date"]] = max(dates)


def _medication(rules: dict, codes: _Codes, concept: dict, requests: list[dict], today: dt.date, facts: dict) -> None:
    def ours(request: dict) -> bool:
        medication = request.get("medicationCodeableConcept", {})
        text = " ".join([medication.get("text", "")] + [c.get("display", "") for c in medication.get("coding", [])])
        return codes.match(concept["codes"], medication) or any(
            name.lower() in text.lower() for name in concept.get("name_patterns", []))

    def start(request: dict) -> str | None:
        bounds = [_day(d.get("timing", {}).get("repeat", {}).get("boundsPeriod", {}).get("start"))
                  for d in request.get("dosageInstruction", [])]
        return min((b for b in bounds if b), default=None) or _day(request.get("authoredOn"))

    def daily(request: dict) -> float | None:
        total = 0.0
        for dosage in request.get("dosageInstruction", []):
            repeat = dosage.get("timing", {}).get("repeat", {})
            quantity = (dosage.get("doseAndRate") or [{}])[0].get("doseQuantity")
            dose = _quantity(concept["dose"], quantity)
            if dose is None or "frequency" not in repeat:
                return None
            per_day = repeat["frequency"] / (repeat.get("period", 1) / rules["periods_per_day"][repeat["periodUnit"]])
            total += dose * per_day
        return total or None

    wanted = concept["facts"]
    mine = sorted((r for r in requests if r.get("status") in rules["history_statuses"] and ours(r)
                   and (_day(r.get("authoredOn")) or "0000") <= today.isoformat()),
                  key=lambda r: (start(r) or "", r.get("authoredOn", "")), reverse=True)
    current = [r for r in mine if r.get("status") in rules["current_statuses"]]
    facts[wanted["has_history"]] = bool(mine)
    facts[wanted["on_therapy"]] = bool(current)
    starts = [s for s in (start(r) for r in mine) if s]
    if starts and "start_date" in wanted:
        facts[wanted["start_date"]] = min(starts)
    if current:
        facts[wanted["active_order_id"]] = current[0]["id"]
        if "current_status" in wanted:
            facts[wanted["current_status"]] = current[0]["status"]
        dose = daily(current[0])
        if dose is not None:
            facts[wanted["current_daily_dose"]] = dose
    if mine and start(mine[0]):
        began, latest = mine[0], daily(mine[0])
        for request in mine[1:]:
            if daily(request) != latest or not start(request):
                break
            began = request
        facts[wanted["last_dose_change_date"]] = start(began)
