"""Synthetic cohorts (`cdsrules cohort generate`): deterministic, valid FHIR, and rich enough to reach the protocol's
decisions when each patient is replayed on its evaluation dates."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cohort import DEFAULT_START, generate_cohort, read_cohort, resolve, write_cohort
from engine.fhir import extract_facts, load_site_mapping, resources_as_of
from engine.loader import load_ruleset
from engine.runtime import Engine
from tests.commands import cohort_cli
from tests.helpers import HETROMBOPAG, ROOT

MAPPING = load_site_mapping(ROOT / "rules" / "site" / "fhir-r4.yaml")
RULESET = load_ruleset(HETROMBOPAG)
END_DAY = resolve().scenarios.days  # the shipped scenario file's last day
REQUIRED_TOPICS = {"start-dose", "eligibility-not-met", "stop-platelets", "stop-duration"}


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cohort")
    write_cohort(generate_cohort(40, 2026, DEFAULT_START), folder)
    return folder


@pytest.fixture(scope="module")
def replayed(cohort_dir) -> list[tuple[str, str, date, list[str]]]:
    """Every patient on every evaluation date: (name, description, date, topics)."""
    engine, rows = Engine(), []
    for case in read_cohort(cohort_dir):
        for day in case.evaluation_dates:
            extraction = extract_facts(MAPPING, resources_as_of(case.resources, day), day)
            evaluation = engine.evaluate(RULESET, extraction.facts, day, hook="patient-view",
                                         reasons=extraction.problems)
            rows.append((case.name, case.description, day, evaluation.topics()))
    return rows


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- determinism ----------------------------------------------------------------------------------------


def test_same_seed_writes_byte_identical_files(tmp_path):
    write_cohort(generate_cohort(12, 5, DEFAULT_START), tmp_path / "a")
    write_cohort(generate_cohort(12, 5, DEFAULT_START), tmp_path / "b")
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(first) == 13 and first == second


def test_same_seed_is_identical_across_processes(tmp_path):
    """No set or dict ordering may leak into the files: hash randomisation differs between the two runs."""
    script = ("import sys; from pathlib import Path; from engine.cohort import generate_cohort, write_cohort, "
              "DEFAULT_START; write_cohort(generate_cohort(6, 42, DEFAULT_START), Path(sys.argv[1]))")
    for name, hash_seed in (("a", "1"), ("b", "2")):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], check=True, cwd=ROOT,
                       env={**os.environ, "PYTHONHASHSEED": hash_seed}, timeout=60)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_another_seed_writes_another_cohort(tmp_path):
    write_cohort(generate_cohort(12, 5, DEFAULT_START), tmp_path / "a")
    write_cohort(generate_cohort(12, 6, DEFAULT_START), tmp_path / "b")
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert first.keys() == second.keys()
    assert all(first[name] != second[name] for name in first)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**64), n=st.integers(min_value=1, max_value=4))
def test_generation_is_a_function_of_its_inputs(seed, n):
    assert generate_cohort(n, seed, DEFAULT_START) == generate_cohort(n, seed, DEFAULT_START)


def test_start_is_the_earliest_transplant():
    patients = generate_cohort(10, 1, date(2027, 3, 1))
    assert patients[0].transplant_date == date(2027, 3, 1)
    assert min(p.transplant_date for p in patients) == date(2027, 3, 1)


# --- FHIR ------------------------------------------------------------------------------------------------


def test_every_resource_and_bundle_is_valid_fhir(cohort_dir):
    """R4B models: fhir.resources 8.3.0 has no R4 package, and R4B equals R4 for these resource types."""
    ids = Counter()
    for file in sorted(cohort_dir.glob("patient-*.json")):
        bundle = json.loads(file.read_text(encoding="utf-8"))
        get_fhir_model_class("Bundle").model_validate(bundle)
        assert bundle["type"] == "collection"
        for entry in bundle["entry"]:
            resource = entry["resource"]
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            assert entry["fullUrl"] == f"urn:uuid:{resource['id']}"
            ids[resource["id"]] += 1
    assert ids and max(ids.values()) == 1, "resource ids must be unique across the cohort"


def test_units_are_mixed_to_exercise_conversions(cohort_dir):
    units = Counter()
    for case in read_cohort(cohort_dir):
        for resource in case.resources:
            if resource["resourceType"] == "Observation" and "valueQuantity" in resource:
                code = resource["code"]["coding"][0]["code"]
                units[(code, resource["valueQuantity"]["unit"])] += 1
    for expected in [("777-3", "10*9/L"), ("777-3", "10*3/uL"), ("777-3", "/uL"), ("29463-7", "kg"),
                     ("29463-7", "g"), ("29463-7", "[lb_av]"), ("14631-6", "umol/L"), ("1975-2", "mg/dL")]:
        assert units[expected], f"no {expected} in the cohort"


def _hetrombopag_orders(resources: list[dict]) -> list[dict]:
    return [r for r in resources if r["resourceType"] == "MedicationRequest"
            and "Hetrombopag" in r["medicationCodeableConcept"]["text"]]


def test_ages_and_doses_are_plausible(cohort_dir):
    for resources, dates, _ in read_cohort(cohort_dir):
        birth = date.fromisoformat(next(r for r in resources if r["resourceType"] == "Patient")["birthDate"])
        age = (dates[0] - birth).days / 365.25  # on the first evaluation date, day +2
        assert 0.5 <= age < 20
        doses = [d["doseAndRate"][0]["doseQuantity"]["value"] for r in _hetrombopag_orders(resources)
                 for d in r["dosageInstruction"]]
        assert all(dose in (2.5, 5, 7.5) for dose in doses)


def test_weights_straddle_the_dose_band_boundary():
    weights = [float(re.search(r", ([0-9.]+) kg;", p.description).group(1))
               for p in generate_cohort(24, 9, DEFAULT_START) if p.scenario.startswith("weight-band")]
    assert len(weights) == 2 and min(weights) <= 20 < max(weights) and max(weights) - min(weights) <= 1.5


# --- the index and reading back --------------------------------------------------------------------------


def test_index_names_each_patient_with_a_description_and_dates(cohort_dir):
    index = json.loads((cohort_dir / "cohort.json").read_text(encoding="utf-8"))
    assert [p["file"] for p in index["patients"]] == [f"patient-{i:04d}.json" for i in range(1, 41)]
    cases = read_cohort(cohort_dir)
    for entry, (resources, dates, description) in zip(index["patients"], cases, strict=True):
        assert description == entry["description"] and "\n" not in description
        transplant = date.fromisoformat(entry["transplant_date"])
        assert dates == sorted(dates) and len(dates) >= 7
        assert all(transplant <= d <= transplant + timedelta(days=END_DAY) for d in dates)
        assert transplant + timedelta(days=2) in dates and transplant + timedelta(days=18) in dates
        assert any(r["resourceType"] == "Patient" for r in resources)
    assert cases[0].name == "patient-0001"


def test_resources_as_of_shows_the_record_as_it_stood(cohort_dir):
    """Before a dose increase the first order is active and the new one unknown; results after the date are gone."""
    case = next(c for c in read_cohort(cohort_dir) if len(_hetrombopag_orders(c.resources)) >= 2)
    first, second = _hetrombopag_orders(case.resources)[:2]
    last_day = date.fromisoformat(first["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]["end"])
    before = resources_as_of(case.resources, last_day)
    known = {r["id"]: r for r in before}
    assert first["status"] == "completed" and known[first["id"]]["status"] == "active"
    assert second["id"] not in known
    assert all(r["effectiveDateTime"][:10] <= last_day.isoformat() for r in before if "effectiveDateTime" in r)
    after = {r["id"]: r for r in resources_as_of(case.resources, last_day + timedelta(days=1))}
    assert after[first["id"]]["status"] == "completed" and after[second["id"]]["status"] == "active"


# --- what the cohort exercises ----------------------------------------------------------------------------


def test_cohort_reaches_the_protocol_decisions(replayed):
    topics = Counter(topic for *_, found in replayed for topic in found)
    assert REQUIRED_TOPICS <= topics.keys(), topics
    assert topics["titration-increase"] and topics["titration-maintain"], "both titration outcomes are wanted"
    assert {"eligibility-met", "eligibility-incomplete", "liver-safety"} <= topics.keys(), topics
    assert "data-missing" not in topics, "a cohort's record is complete unless a scenario says otherwise"


def test_some_patients_are_ineligible_and_never_get_a_start_dose(replayed):
    by_patient: dict[str, set[str]] = {}
    for name, _, _, found in replayed:
        by_patient.setdefault(name, set()).update(found)
    ineligible = {name for name, description, _, _ in replayed if description.startswith("ineligible")}
    assert len(ineligible) >= 5
    for name in ineligible:
        assert "eligibility-not-met" in by_patient[name] and "start-dose" not in by_patient[name], name


def test_the_boundary_weight_of_20_kg_gets_the_low_dose():
    """A cohort at exactly 20.0 kg must start at 2.5 mg, just above it at 5 mg (the protocol's "> 20 kg")."""
    engine = Engine()
    for patient in generate_cohort(96, 4, DEFAULT_START):
        if not patient.scenario.startswith("weight-band"):
            continue
        day4 = patient.transplant_date + timedelta(days=4)
        extraction = extract_facts(MAPPING, resources_as_of(patient.resources, day4), day4)
        (decision,) = engine.evaluate(RULESET, extraction.facts, day4, hook="patient-view",
                                      reasons=extraction.problems).decisions
        assert decision.topic == "start-dose"
        assert decision.suggestion.daily_dose == (2.5 if extraction.facts["weight_kg"] <= 20 else 5)


# --- command line ----------------------------------------------------------------------------------------------


def test_cli_handler_writes_the_cohort(tmp_path, capsys):
    out = tmp_path / "out"
    assert cohort_cli("cohort", "generate", "--n", "3", "--seed", "11", "--out", str(out),
                      "--start", "2026-02-01") == 0
    assert sorted(p.name for p in out.iterdir()) == ["cohort.json", "patient-0001.json", "patient-0002.json",
                                                     "patient-0003.json"]
    index = json.loads((out / "cohort.json").read_text(encoding="utf-8"))
    assert (index["n"], index["seed"], index["start"]) == (3, 11, "2026-02-01")
    assert index["patients"][0]["transplant_date"] == "2026-02-01"
    assert "wrote 3 patients" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["cohort"], ["cohort", "generate", "--n", "0", "--seed", "1", "--out", "x"]])
def test_cli_rejects_incomplete_commands(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cohort_cli(*argv)
    assert exit_info.value.code == 2
