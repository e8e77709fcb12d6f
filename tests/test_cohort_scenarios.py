"""The cohort's scenario file: validated with located errors, and the simulated clinician follows the ruleset version
it is given, not numbers of its own."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine import versions
from engine.cohort import generate_cohort, load_scenarios, resolve
from engine.errors import RulesetErrors
from engine.fhir import load_site_mapping
from engine.loader import load_ruleset
from tests.helpers import HETROMBOPAG, ROOT

SCENARIOS = ROOT / "rules" / "hetrombopag" / "scenarios.yaml"
TEXT = SCENARIOS.read_text(encoding="utf-8")


def _line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


def test_the_shipped_scenario_file_is_valid():
    scenarios = load_scenarios(SCENARIOS)
    assert len(set(scenarios.block)) == len(scenarios.data["scenarios"])


def test_a_bad_value_is_reported_at_its_line():
    text = TEXT.replace("treated-slow: {count: 3,", "treated-slow: {count: 0,")
    with pytest.raises(RulesetErrors) as raised:
        load_scenarios(SCENARIOS, text)
    [error] = raised.value.errors
    assert error.line == _line_of(text, "treated-slow: {count: 0")
    assert error.path == ("scenarios", "treated-slow", "count")


def test_a_role_naming_no_parameter_of_the_ruleset_is_reported_at_its_line():
    text = TEXT.replace("{param: review_interval_days}", "{param: review_days}")
    with pytest.raises(RulesetErrors) as raised:
        resolve(load_ruleset(HETROMBOPAG), load_scenarios(SCENARIOS, text))
    [error] = raised.value.errors
    assert error.line == _line_of(text, "review_days}") and "review_days" in error.message


def test_the_clinician_reads_the_numbers_of_the_version_given():
    released = resolve(load_ruleset(HETROMBOPAG)).clinician
    draft = resolve(load_ruleset(HETROMBOPAG.with_name("1.1.0.yaml"))).clinician  # increases below 30, not 50
    assert released.increases_at(40) and not draft.increases_at(40)
    assert released.start_dose(20.0) < released.start_dose(20.1)


def _orders(patients) -> list[list[tuple[str, float]]]:
    return [[(r["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]["start"],
              r["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"])
             for r in p.resources if r["resourceType"] == "MedicationRequest" and "doseAndRate" in
             r["dosageInstruction"][0]] for p in patients]


def test_another_review_interval_changes_the_orders():
    text = HETROMBOPAG.read_text(encoding="utf-8")
    weekly = text.replace("  review_interval_days:\n    value: 14\n", "  review_interval_days:\n    value: 7\n")
    assert weekly != text
    fortnightly = generate_cohort(24, 3, ruleset=load_ruleset(HETROMBOPAG))
    weekly_cohort = generate_cohort(24, 3, ruleset=load_ruleset(HETROMBOPAG, weekly))
    assert [p.scenario for p in fortnightly] == [p.scenario for p in weekly_cohort]
    assert _orders(fortnightly) != _orders(weekly_cohort)


def test_another_increase_threshold_changes_the_orders():
    released = generate_cohort(24, 3, ruleset=load_ruleset(HETROMBOPAG))
    draft = generate_cohort(24, 3, ruleset=load_ruleset(HETROMBOPAG.with_name("1.1.0.yaml")))
    counts = [sum(len(o) for o in _orders(c)) for c in (released, draft)]
    assert counts[0] > counts[1], "fewer patients qualify for an increase below 30 than below 50"


def test_the_default_cohort_follows_the_latest_release():
    latest = resolve().ruleset
    assert latest.version == max(versions.read_manifest(SCENARIOS.parent), key=versions.version_key)
    assert Path(latest.source_file).parent == SCENARIOS.parent


def _protocol_literals() -> set[str]:
    """The drug's names, its doses, and every code the scenario file and the ruleset's medication write."""
    ruleset = load_ruleset(HETROMBOPAG)
    medication = ruleset.medication
    literals = {ruleset.id, medication.concept, medication.display, medication.route["code"]}
    doses = [p.value for name, p in ruleset.parameters.items() if name.endswith("_mg")]
    literals |= {str(d) if float(d) % 1 else f"{d:g} mg" for d in doses}  # 2.5; 5 only as "5 mg"
    codings = load_scenarios(SCENARIOS).data["codings"]
    literals |= {c["code"] for group in codings.values() for c in group.values()}
    literals |= {name for name in codings["diagnoses"]}  # the diagnoses' own words
    return literals


def test_no_protocol_literal_is_written_in_the_generator():
    sources = {file.name: file.read_text(encoding="utf-8").lower()
               for file in (ROOT / "engine" / "cohort").glob("*.py")}
    found = {(name, literal) for literal in _protocol_literals() for name, text in sources.items()
             if re.search(rf"(?<![\w.]){re.escape(literal.lower())}(?![\w])", text)}
    assert not found, f"protocol values written in Python: {sorted(found)}"


def test_every_coding_of_the_scenario_file_is_one_the_site_mapping_reads():
    mapping = load_site_mapping(ROOT / "rules" / "site" / "fhir-r4.yaml")
    codings = load_scenarios(SCENARIOS).data["codings"]
    indexes = {"observations": mapping.observation_codes, "procedures": mapping.procedure_codes,
               "history": mapping.condition_codes}
    for group, index in indexes.items():
        for name, c in codings[group].items():
            assert index.match({"coding": [{"system": c["system"], "code": c["code"]}]}), (group, name)
    for name in set(load_scenarios(SCENARIOS).data["population"]["diagnosis"]):
        c = codings["diagnoses"][name]
        assert mapping.condition_codes.match({"coding": [{"system": c["system"], "code": c["code"]}]}), name


def test_a_course_not_described_is_reported_where_it_is_named():
    text = TEXT.replace("treated-slow: {count: 3, text: \"treated, slow recovery\", treated: true, recovery: slow}",
                        "treated-slow: {count: 3, text: \"treated, slow recovery\", treated: true, recovery: slower}")
    assert text != TEXT
    with pytest.raises(RulesetErrors) as raised:
        load_scenarios(SCENARIOS, text)
    [error] = raised.value.errors
    assert error.line == _line_of(text, "recovery: slower") and "slower" in error.message
