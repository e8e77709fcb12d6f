"""The site mapping and the FHIR R4 -> facts extractor, on small valid R4 resources (see fhir_fixtures.py)."""
from __future__ import annotations

import copy
import dataclasses
import json
import re
from datetime import date
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from engine.fhir import (
    Extraction,
    MappingError,
    draft_orders_mention,
    extract_facts,
    load_site_mapping,
    prefetch_templates,
    resources_from,
)
from tests import fhir_fixtures as fx
from tests.helpers import json_paths, replace_at

ROOT = Path(__file__).resolve().parent.parent
MAPPING_FILE = ROOT / "rules" / "site" / "fhir-r4.yaml"
TODAY = date(2026, 1, 5)


@pytest.fixture(scope="module")
def mapping():
    return load_site_mapping(MAPPING_FILE)


def extract(mapping, *resources, **kwargs) -> Extraction:
    return extract_facts(mapping, list(resources), kwargs.pop("today", TODAY), **kwargs)


# --- the mapping file -----------------------------------------------------------------------------


def test_site_mapping_validates_against_its_schema():
    schema = schemas.load("site-mapping.schema.json")
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(MAPPING_FILE.read_text()))


def test_mapping_declares_every_contract_fact(mapping):
    expected = {
        "birth_date", "age_years", "weight_kg", "weight_date", "platelets_10e9_l", "platelets_date",
        "alt_u_l", "alt_date", "ast_u_l", "ast_date", "bilirubin_umol_l", "bilirubin_date", "ecog", "ecog_date",
        "alt_uln_u_l", "alt_uln_source", "ast_uln_u_l", "ast_uln_source", "bilirubin_uln_umol_l",
        "bilirubin_uln_source", "has_neuroblastoma", "heart_failure_onset", "arrhythmia_onset",
        "peripheral_thrombosis_onset", "myocardial_infarction_onset", "cerebral_infarction_onset",
        "thromboembolic_active", "hsct_count", "hsct_date", "platelet_transfusion_date", "on_therapy",
        "therapy_start_date", "current_daily_dose_mg", "last_dose_change_date", "active_order_id",
        "has_draft_order", "draft_order_id", "draft_daily_dose_mg", "draft_frequency_per_day", "has_drug_history",
        # the second protocol's: its diagnosis, ancestry, liver disease and its own drug's order facts
        "has_itp", "east_asian_ancestry", "has_hepatic_impairment", "eltrombopag_history", "eltrombopag_current",
        "eltrombopag_status", "eltrombopag_start_date", "eltrombopag_dose_mg", "eltrombopag_dose_since",
        "eltrombopag_order_id", "eltrombopag_draft", "eltrombopag_draft_id", "eltrombopag_draft_dose_mg",
        "eltrombopag_draft_per_day"}
    assert set(mapping.fact_types) == expected
    assert mapping.fact_types["age_years"] == "integer" and mapping.fact_types["on_therapy"] == "boolean"


def _broken(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    """A copy of the real mapping with one edit; returns the file and the 1-based line of the edit."""
    text = MAPPING_FILE.read_text(encoding="utf-8")
    assert old in text
    text = text.replace(old, new, 1)
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    return path, text[:text.index(new)].count("\n") + 1


def test_factor_given_as_text_is_a_mapping_error_with_its_line(tmp_path):
    path, line = _broken(tmp_path, "g: 0.001,", 'g: "0.001",')
    with pytest.raises(MappingError) as caught:
        load_site_mapping(path)
    error = caught.value
    assert error.line == line and error.column > 0
    assert error.path == ["observations", "weight", "conversions", "g"]
    assert str(error).startswith(f"{path}:{line}:{error.column}: at observations.weight.conversions.g: ")
    assert "number" in error.message


def test_unknown_code_system_is_reported_where_it_is_used(tmp_path):
    path, line = _broken(tmp_path, "- {system: loinc, codes: [777-3", "- {system: lonic, codes: [777-3")
    with pytest.raises(MappingError) as caught:
        load_site_mapping(path)
    assert caught.value.line == line
    assert caught.value.path == ["observations", "platelets", "codes", 0, "system"]
    assert "lonic" in caught.value.message


def test_overlapping_uln_bands_and_duplicate_facts_are_all_reported(tmp_path):
    path, line = _broken(tmp_path, "- {from: 1, to: 7,", "- {from: 2, to: 7,")
    text = path.read_text().replace("date_fact: ast_date", "date_fact: alt_date")
    path.write_text(text)
    with pytest.raises(MappingError) as caught:
        load_site_mapping(path)
    messages = [e.message for e in caught.value.errors]
    assert any("starts at 2" in m for m in messages)
    assert any("'alt_date' is already produced" in m for m in messages)
    assert line in [e.line for e in caught.value.errors]


def test_missing_mapping_file_is_a_mapping_error(tmp_path):
    with pytest.raises(MappingError) as caught:
        load_site_mapping(tmp_path / "nowhere.yaml")
    assert "nowhere.yaml" in str(caught.value)


def test_yaml_syntax_error_has_a_position(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nsystems: [unclosed\n")
    with pytest.raises(MappingError) as caught:
        load_site_mapping(path)
    assert caught.value.line >= 2


def test_python_holds_no_protocol_knowledge(mapping):
    """engine/fhir/ only interprets the mapping: no code, unit or drug name from it appears in the source."""
    source = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "engine" / "fhir").glob("*.py")))
    data = yaml.safe_load(MAPPING_FILE.read_text(encoding="utf-8"))
    assert "hetrombopag" not in source.lower()
    words = set()
    for section in ("observations", "conditions", "procedures", "medications"):
        for spec in data[section].values():
            words |= {code for code_set in spec.get("codes", ()) for code in code_set["codes"]}
            words |= set(spec.get("conversions", {})) | set(spec.get("aliases", {}))
    words |= {uri for system in data["systems"].values() for uri in system["uris"]}
    leaked = sorted(w for w in words if len(w) >= 3 and w in source)
    assert leaked == []


# --- patient ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("today, age", [(date(2026, 1, 4), 17), (date(2026, 1, 5), 18), (date(2027, 1, 4), 18)])
def test_age_is_completed_years_at_the_18th_birthday(mapping, today, age):
    out = extract(mapping, fx.patient("2008-01-05"), today=today)
    assert out.facts["age_years"] == age and out.facts["birth_date"] == "2008-01-05"


def test_leap_day_birthday_turns_a_year_older_on_first_march(mapping):
    assert extract(mapping, fx.patient("2008-02-29"), today=date(2026, 2, 28)).facts["age_years"] == 17
    assert extract(mapping, fx.patient("2008-02-29"), today=date(2026, 3, 1)).facts["age_years"] == 18


def test_a_partial_birth_date_gives_the_ages_it_allows(mapping):
    out = extract(mapping, fx.patient("2008"))  # on 2026-01-05: 17, or 18 if born by 5 January
    assert "age_years" not in out.facts and "age_years" not in out.problems
    assert out.possible["age_years"].values == (17, 18) and "'2008'" in out.possible["age_years"].why


def test_a_partial_birth_date_that_decides_the_age_gives_it_exactly(mapping):
    out = extract(mapping, fx.patient("2015-10"))
    assert out.facts["age_years"] == 10 and "age_years" not in out.possible


def test_a_partial_onset_gives_the_days_it_allows(mapping):
    condition = fx.condition("42343007")  # heart failure
    condition["onsetDateTime"] = "2025-03"
    onset = extract(mapping, condition, supplied={"Condition"}).possible["heart_failure_onset"]
    assert onset.shown == "2025-03" and len(onset.values) == 31 and onset.values[0] == date(2025, 3, 1)


def test_an_exact_date_after_every_day_a_partial_one_allows_is_the_latest_exactly(mapping):
    partial, exact = fx.condition("42343007", id="c1"), fx.condition("42343007", id="c2")
    partial["onsetDateTime"], exact["onsetDateTime"] = "2025-03", "2025-04-02"
    out = extract(mapping, partial, exact, supplied={"Condition"})
    assert out.facts["heart_failure_onset"] == "2025-04-02" and "heart_failure_onset" not in out.possible


# --- observations and units -----------------------------------------------------------------------------


@pytest.mark.parametrize("code, value, unit, ucum, fact, expected", [
    ("29463-7", 21.5, "kg", True, "weight_kg", 21.5),
    ("29463-7", 20000, "g", True, "weight_kg", 20.0),
    ("3141-9", 44, "[lb_av]", True, "weight_kg", 19.95806428),
    ("29463-7", 44, "lbs", False, "weight_kg", 19.95806428),
    ("777-3", 45, "10*9/L", True, "platelets_10e9_l", 45.0),
    ("777-3", 120, "10*3/uL", True, "platelets_10e9_l", 120.0),
    ("777-3", 120000, "/uL", True, "platelets_10e9_l", 120.0),
    ("26515-7", 85000, "/mm3", True, "platelets_10e9_l", 85.0),
    ("777-3", 60, "10^9/L", False, "platelets_10e9_l", 60.0),
    ("778-1", 60, "x10^9/L", False, "platelets_10e9_l", 60.0),
    ("777-3", 60, "10e9/L", False, "platelets_10e9_l", 60.0),
    ("777-3", 75, "K/uL", False, "platelets_10e9_l", 75.0),
    ("1975-2", 1.2, "mg/dL", True, "bilirubin_umol_l", 20.52),
    ("14631-6", 15, "umol/L", True, "bilirubin_umol_l", 15.0),
    ("1742-6", 0.5, "ukat/L", True, "alt_u_l", 30.0),
    ("1743-4", 35, "U/L", True, "alt_u_l", 35.0),
    ("1920-8", 41, "U/L", True, "ast_u_l", 41.0),
])
def test_unit_conversions(mapping, code, value, unit, ucum, fact, expected):
    out = extract(mapping, fx.observation(code, value, unit, ucum=ucum))
    assert out.facts[fact] == pytest.approx(expected, rel=1e-12)
    date_fact = {c.value_fact: c.date_fact for c in mapping.observations.values()}[fact]
    assert out.facts[date_fact] == "2026-01-03"


def test_source_shows_the_conversion(mapping):
    out = extract(mapping, fx.observation("777-3", 120, "10*3/uL", id="abc"))
    assert out.sources["platelets_10e9_l"] == "Observation/abc 777-3 2026-01-03: 120 10*3/uL -> 120 10*9/L"


def test_unconvertible_unit_is_a_problem_not_a_fact(mapping):
    out = extract(mapping, fx.observation("777-3", 5, "mmol/L", id="x"))
    assert "platelets_10e9_l" not in out.facts and "platelets_date" not in out.facts
    assert out.problems["platelets_10e9_l"] == "unit 'mmol/L' cannot be converted to 10*9/L (Observation/x)"


def test_unconvertible_latest_value_does_not_fall_back_to_an_older_one(mapping):
    older = fx.observation("777-3", 40, "10*9/L", date="2025-12-20")
    newer = fx.observation("777-3", 5, "mmol/L", date="2026-01-03")
    out = extract(mapping, older, newer)
    assert "platelets_10e9_l" not in out.facts and "mmol/L" in out.problems["platelets_10e9_l"]


def test_value_with_a_comparator_is_a_bound_not_an_exact_value(mapping):
    result = fx.observation("777-3", None, valueQuantity={"value": 10, "comparator": "<", "unit": "10*9/L"})
    out = extract(mapping, result)
    assert "platelets_10e9_l" not in out.facts
    bound = out.possible["platelets_10e9_l"]
    assert (bound.shown, bound.low, bound.high, bound.high_closed) == ("<10", None, 10, False)


def test_a_comparator_that_is_not_a_bound_is_not_read(mapping):
    result = fx.observation("777-3", None, valueQuantity={"value": 10, "comparator": "ad", "unit": "10*9/L"})
    out = extract(mapping, result)
    assert "platelets_10e9_l" not in out.possible and "'ad10'" in out.problems["platelets_10e9_l"]


def test_latest_result_by_effective_date_wins(mapping):
    results = [fx.observation("777-3", 30, "10*9/L", date="2025-12-01"),
               fx.observation("777-3", 55, "10*9/L", date="2026-01-04", effective="period"),
               fx.observation("26515-7", 40, "10*9/L", date="2026-01-02T23:00:00+08:00"),
               fx.observation("777-3", 44, "10*9/L", date="2025-12-31", effective="issued")]
    out = extract(mapping, *results)
    assert out.facts["platelets_10e9_l"] == 55.0 and out.facts["platelets_date"] == "2026-01-04"


def test_entered_in_error_and_cancelled_results_are_ignored(mapping):
    out = extract(mapping, fx.observation("777-3", 30, "10*9/L", date="2025-12-01"),
                  fx.observation("777-3", 300, "10*9/L", date="2026-01-04", status="entered-in-error"),
                  fx.observation("777-3", 200, "10*9/L", date="2026-01-03", status="cancelled"),
                  fx.observation("777-3", 35, "10*9/L", date="2025-12-02", status="amended"))
    assert out.facts["platelets_10e9_l"] == 35.0


def test_results_after_the_evaluation_date_are_ignored_with_a_note(mapping):
    out = extract(mapping, fx.observation("777-3", 150, "10*9/L", date="2026-01-09", id="late"))
    assert "platelets_10e9_l" not in out.facts and "Observation/late" in out.problems["platelets_10e9_l"]
    out = extract(mapping, fx.observation("777-3", 150, "10*9/L", date="2026-01-09"),
                  fx.observation("777-3", 60, "10*9/L", date="2026-01-02"))
    assert out.facts["platelets_10e9_l"] == 60.0 and "platelets_10e9_l" not in out.problems


def test_undated_results_are_not_used(mapping):
    undated = fx.observation("777-3", 50, "10*9/L", effective="none", id="nodate")
    out = extract(mapping, undated)
    assert "platelets_10e9_l" not in out.facts and "Observation/nodate" in out.problems["platelets_10e9_l"]


def test_result_without_a_value_leaves_the_previous_one_standing(mapping):
    absent = fx.observation("777-3", date="2026-01-04",
                            dataAbsentReason={"coding": [{"code": "error"}], "text": "specimen clotted"})
    out = extract(mapping, absent, fx.observation("777-3", 60, "10*9/L", date="2026-01-02"))
    assert out.facts["platelets_10e9_l"] == 60.0


@pytest.mark.parametrize("value_x, expected", [
    ({"valueInteger": 1}, 1),
    ({"valueQuantity": {"value": 2}}, 2),
    ({"valueCodeableConcept": {"coding": [{"system": fx.LOINC, "code": "LA9624-3"}]}}, 2),
    ({"valueCodeableConcept": {"coding": [{"system": "urn:local", "code": "x", "display": "3"}]}}, 3),
])
def test_ecog_score_forms(mapping, value_x, expected):
    out = extract(mapping, fx.observation("89247-1", **value_x))
    assert out.facts["ecog"] == expected and out.facts["ecog_date"] == "2026-01-03"


def test_ecog_out_of_range_is_a_problem(mapping):
    out = extract(mapping, fx.observation("89262-0", valueInteger=7))
    assert "ecog" not in out.facts and "0 to 5" in out.problems["ecog"]


# --- upper limits of normal ------------------------------------------------------------------------------


def test_uln_from_the_reference_range_matching_age_and_normal_type(mapping):
    ranges = [fx.reference_range(100, "U/L", type_code="treatment"),
              fx.reference_range(30, "U/L", age=(0, 6, "a")),
              fx.reference_range(35, "U/L", age=(7, 12, "a"))]
    out = extract(mapping, fx.patient("2018-06-15"), fx.observation("1742-6", 50, "U/L", ranges=ranges, id="r"))
    assert out.facts["alt_uln_u_l"] == 35.0
    assert out.facts["alt_uln_source"] == "reference range on the result"
    assert "Observation/r" in out.sources["alt_uln_u_l"]


def test_reference_range_age_in_months(mapping):
    ranges = [fx.reference_range(58, "U/L", age=(0, 11, "mo")), fx.reference_range(41, "U/L", age=(12, 83, "mo"))]
    out = extract(mapping, fx.patient("2025-05-01"), fx.observation("1920-8", 50, "U/L", ranges=ranges))
    assert out.facts["ast_uln_u_l"] == 58.0


def test_uln_from_the_range_is_converted_like_the_value(mapping):
    ranges = [fx.reference_range(1.2, "mg/dL", type_code="normal")]
    out = extract(mapping, fx.patient(), fx.observation("1975-2", 1.5, "mg/dL", ranges=ranges))
    assert out.facts["bilirubin_umol_l"] == pytest.approx(25.65)
    assert out.facts["bilirubin_uln_umol_l"] == pytest.approx(20.52)


@pytest.mark.parametrize("text", ["0-40", "<40", "0 - 40 U/L", "≤ 40"])
def test_uln_from_reference_range_text(mapping, text):
    result = fx.observation("1920-8", 50, "U/L", ranges=[fx.reference_range(text=text)])
    out = extract(mapping, fx.patient(), result)
    assert out.facts["ast_uln_u_l"] == 40.0
    assert out.facts["ast_uln_source"] == "reference range text on the result"


def test_range_text_is_read_in_the_results_unit(mapping):
    result = fx.observation("1742-6", 0.5, "ukat/L", ranges=[fx.reference_range(text="0-0.6")])
    assert extract(mapping, fx.patient(), result).facts["alt_uln_u_l"] == pytest.approx(36.0)


@pytest.mark.parametrize("birth, band, alt, bilirubin", [
    ("2025-06-01", "ages under 1", 33.0, 20.5),
    ("2022-01-06", "ages 1-6", 26.0, 18.9),
    ("2018-06-15", "ages 7-12", 29.0, 18.9),
    ("2010-01-01", "ages 13-17", 33.0, 20.5),
    ("1990-01-01", "ages 18 and over", 40.0, 21.0),
])
def test_uln_from_the_site_table_names_the_band(mapping, birth, band, alt, bilirubin):
    out = extract(mapping, fx.patient(birth), fx.observation("1742-6", 50, "U/L"),
                  fx.observation("14631-6", 15, "umol/L"))
    assert out.facts["alt_uln_u_l"] == alt and out.facts["alt_uln_source"] == f"site table, {band}"
    assert out.facts["bilirubin_uln_umol_l"] == bilirubin


def test_range_for_another_age_falls_through_to_the_site_table(mapping):
    result = fx.observation("1742-6", 50, "U/L", ranges=[fx.reference_range(40, "U/L", age=(18, 120, "a"))])
    out = extract(mapping, fx.patient("2022-01-06"), result)
    assert out.facts["alt_uln_u_l"] == 26.0 and out.facts["alt_uln_source"] == "site table, ages 1-6"


def test_no_uln_without_the_value(mapping):
    out = extract(mapping, fx.patient(), fx.observation("777-3", 50, "10*9/L"))
    assert not {"alt_uln_u_l", "ast_uln_u_l", "bilirubin_uln_umol_l"} & set(out.facts)


def test_no_uln_without_range_or_age_says_why(mapping):
    out = extract(mapping, fx.observation("1742-6", 50, "U/L"))
    assert out.facts["alt_u_l"] == 50.0 and "alt_uln_u_l" not in out.facts
    assert "birth date" in out.problems["alt_uln_u_l"]


# --- conditions -------------------------------------------------------------------------------------------


def test_conditions_by_snomed_and_icd10_prefix(mapping):
    out = extract(mapping, fx.condition("432328008", onset="2024-03-01"),
                  fx.condition("I48.91", fx.ICD10CM, onset="2025-02-01"),
                  fx.condition("I4891", fx.ICD10, onset="2025-04-01", clinical="resolved"),
                  fx.condition("I63.9", fx.ICD10, onset="2023-01-01"))
    assert out.facts["has_neuroblastoma"] is True
    assert out.facts["arrhythmia_onset"] == "2025-04-01"
    assert out.facts["cerebral_infarction_onset"] == "2023-01-01"
    assert "heart_failure_onset" not in out.facts


def test_icd10_neuroblastoma_code_with_and_without_dot(mapping):
    assert extract(mapping, fx.condition("C74.90", fx.ICD10CM)).facts["has_neuroblastoma"] is True
    assert extract(mapping, fx.condition("C749", fx.ICD10)).facts["has_neuroblastoma"] is True
    assert extract(mapping, fx.condition("C74.1", fx.ICD10)).facts["has_neuroblastoma"] is False


def test_refuted_and_entered_in_error_conditions_are_ignored(mapping):
    out = extract(mapping, fx.condition("432328008", verification="refuted"),
                  fx.condition("I50.9", fx.ICD10, verification="entered-in-error", clinical=None))
    assert out.facts["has_neuroblastoma"] is False and "heart_failure_onset" not in out.facts


def test_onset_from_onset_period_then_recorded_date(mapping):
    out = extract(mapping, fx.condition("42343007", onset=None, onset_period="2024-05-05"),
                  fx.condition("22298006", onset=None, recorded="2024-07-07T10:00:00Z"))
    assert out.facts["heart_failure_onset"] == "2024-05-05"
    assert out.facts["myocardial_infarction_onset"] == "2024-07-07"


@pytest.mark.parametrize("clinical, active", [("active", True), ("relapse", True), ("recurrence", True),
                                              (None, True), ("resolved", False), ("inactive", False),
                                              ("remission", False)])
def test_thromboembolic_active_by_clinical_status(mapping, clinical, active):
    out = extract(mapping, fx.condition("I80.2", fx.ICD10, clinical=clinical))
    assert out.facts["thromboembolic_active"] is active
    assert out.facts["peripheral_thrombosis_onset"] == "2025-06-01"  # any clinical status


def test_peripheral_thrombosis_by_snomed(mapping):
    assert extract(mapping, fx.condition("439127006")).facts["peripheral_thrombosis_onset"] == "2025-06-01"


# --- procedures -----------------------------------------------------------------------------------------


def test_procedures_counted_and_latest_date(mapping):
    out = extract(mapping, fx.procedure("709115004", performed="2025-06-01"),
                  fx.procedure("30243Y0", fx.ICD10PCS, performed="2025-11-20", period=True),
                  fx.procedure("425983008", performed="2025-12-30", status="not-done"),
                  fx.procedure("180208003", performed="2025-12-28"),
                  fx.procedure("180208003", performed="2026-01-02T09:00:00+08:00"))
    assert out.facts["hsct_count"] == 2 and out.facts["hsct_date"] == "2025-11-20"
    assert out.facts["platelet_transfusion_date"] == "2026-01-02"


# --- medications ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("request_kwargs", [
    {"code": "HETROMBOPAG-5"},
    {"code": None, "text": "Hetrombopag olamine tablets 2.5 mg"},
    {"code": "12345", "system": "urn:local", "display": "HETROMBOPAG 5 MG TAB"},
])
def test_medication_recognised_by_local_code_or_name(mapping, request_kwargs):
    out = extract(mapping, fx.medication_request(**request_kwargs))
    assert out.facts["has_drug_history"] is True and out.facts["on_therapy"] is True


def test_other_medications_are_not_ours(mapping):
    out = extract(mapping, fx.medication_request(code="ELTROMBOPAG", display="Eltrombopag 25 mg"))
    assert out.facts["has_drug_history"] is False and out.facts["on_therapy"] is False
    assert "current_daily_dose_mg" not in out.facts


@pytest.mark.parametrize("reshape", [lambda r: r, fx.reshaped_dose_as_object, fx.reshaped_stu3_dose])
def test_daily_dose_from_every_dose_shape(mapping, reshape):
    request = reshape(fx.medication_request(id="o1", dose=2.5, frequency=2, period=1, period_unit="d"))
    out = extract(mapping, request)
    assert out.facts["current_daily_dose_mg"] == 5.0 and out.facts["active_order_id"] == "o1"


@pytest.mark.parametrize("kwargs, daily", [
    ({"dose": 2.5, "frequency": 1, "period": 12, "period_unit": "h"}, 5.0),
    ({"dose": 2.5, "frequency": None, "period": 1, "period_unit": "d"}, 2.5),
    ({"dose": 5000, "unit": "ug", "frequency": 1, "period": 1, "period_unit": "d"}, 5.0),
    ({"dose": 0.0075, "unit": "g", "frequency": 1, "period": 1, "period_unit": "d"}, 7.5),
    ({"dose": 35, "frequency": 1, "period": 1, "period_unit": "wk"}, 5.0),
])
def test_daily_dose_arithmetic(mapping, kwargs, daily):
    out = extract(mapping, fx.medication_request(**kwargs))
    assert out.facts["current_daily_dose_mg"] == pytest.approx(daily, rel=1e-12)


@pytest.mark.parametrize("kwargs, reason", [
    ({"dose": 1, "unit": "tablet"}, "'tablet'"),
    ({"repeat": False}, "timing.repeat"),
    ({"dose": None}, "no dose"),
    ({"period_unit": "mo"}, "'mo'"),
])
def test_unreadable_doses_are_problems_not_guesses(mapping, kwargs, reason):
    out = extract(mapping, fx.medication_request(**kwargs))
    assert "current_daily_dose_mg" not in out.facts and reason in out.problems["current_daily_dose_mg"]
    assert out.facts["on_therapy"] is True


def _two_dosages(first_sequence, second_sequence) -> dict:
    """2.5 mg in the morning and 5 mg in the evening, as two dosage instructions."""
    request = fx.medication_request(dose=2.5)
    evening = copy.deepcopy(request["dosageInstruction"][0])
    evening["doseAndRate"][0]["doseQuantity"]["value"] = 5
    request["dosageInstruction"].append(evening)
    for dosage, sequence in zip(request["dosageInstruction"], (first_sequence, second_sequence), strict=True):
        if sequence is not None:
            dosage["sequence"] = sequence
    return fx.valid(request)


def test_concurrent_dosage_instructions_add_up(mapping):
    out = extract(mapping, _two_dosages(1, 1))
    assert out.facts["current_daily_dose_mg"] == 7.5


@pytest.mark.parametrize("sequences", [(1, 2), (None, None)])
def test_sequential_or_unmarked_dosage_instructions_are_not_added_up(mapping, sequences):
    out = extract(mapping, _two_dosages(*sequences))
    assert "current_daily_dose_mg" not in out.facts and "not marked concurrent" in out.problems["current_daily_dose_mg"]


def test_frequency_range_is_not_guessed(mapping):
    request = fx.medication_request()
    request["dosageInstruction"][0]["timing"]["repeat"]["frequencyMax"] = 2
    out = extract(mapping, fx.valid(request))
    assert "frequencyMax" in out.problems["current_daily_dose_mg"]


def test_times_of_day_count_as_the_frequency(mapping):
    request = fx.medication_request(dose=2.5, frequency=None)
    request["dosageInstruction"][0]["timing"]["repeat"]["timeOfDay"] = ["08:00:00", "20:00:00"]
    assert extract(mapping, fx.valid(request)).facts["current_daily_dose_mg"] == 5.0


def test_medication_reference_to_a_contained_medication(mapping):
    request = fx.medication_request(code=None)
    del request["medicationCodeableConcept"]
    request["contained"] = [{"resourceType": "Medication", "id": "med",
                             "code": {"coding": [{"system": fx.FORMULARY, "code": "HETROMBOPAG-5"}]}}]
    request["medicationReference"] = {"reference": "#med"}
    assert extract(mapping, fx.valid(request)).facts["on_therapy"] is True


def test_therapy_history_facts(mapping):
    orders = [fx.medication_request(id="a", status="completed", dose=2.5, authored="2025-11-01",
                                    bounds_start="2025-10-30"),
              fx.medication_request(id="b", status="stopped", dose=2.5, authored="2025-11-14"),
              fx.medication_request(id="c", status="active", dose=5, authored="2025-11-28"),
              fx.medication_request(id="d", status="on-hold", dose=5, authored="2025-12-12"),
              fx.medication_request(id="e", status="draft", dose=7.5, authored="2025-12-26"),
              fx.medication_request(id="f", status="entered-in-error", dose=7.5, authored="2025-12-27")]
    out = extract(mapping, *orders)
    assert out.facts["therapy_start_date"] == "2025-10-30"
    assert out.facts["active_order_id"] == "d" and out.facts["current_daily_dose_mg"] == 5.0
    assert out.facts["last_dose_change_date"] == "2025-11-28"
    assert out.facts["on_therapy"] is True and out.facts["has_drug_history"] is True


def test_single_order_dose_change_is_its_start(mapping):
    out = extract(mapping, fx.medication_request(authored="2025-12-20", bounds_start="2025-12-21"))
    assert out.facts["last_dose_change_date"] == "2025-12-21" == out.facts["therapy_start_date"]


def test_completed_orders_only_mean_history_not_therapy(mapping):
    out = extract(mapping, fx.medication_request(status="completed"))
    assert out.facts["has_drug_history"] is True and out.facts["on_therapy"] is False
    assert "active_order_id" not in out.facts and "current_daily_dose_mg" not in out.facts


def test_draft_order_facts(mapping):
    draft = fx.medication_request(id="new", status="draft", dose=2.5, frequency=2, period=1, period_unit="d")
    other = fx.medication_request(id="amox", status="draft", code="617993", system="urn:rx", display="Amoxicillin")
    drafts = fx.bundle([other, draft], bundle_type=None)
    out = extract(mapping, draft_orders=drafts)
    assert out.facts["has_draft_order"] is True and out.facts["draft_order_id"] == "new"
    assert out.facts["draft_daily_dose_mg"] == 5.0 and out.facts["draft_frequency_per_day"] == 2.0
    assert "has_drug_history" not in out.facts  # the patient's own orders were not supplied


def test_draft_orders_mention(mapping):
    ours = fx.medication_request(status="draft", code=None, text="hetrombopag 5 mg")
    theirs = fx.medication_request(status="draft", code="617993", system="urn:rx", display="Amoxicillin")
    assert draft_orders_mention(mapping, "hetrombopag", [theirs, ours]) is True
    assert draft_orders_mention(mapping, "hetrombopag", fx.bundle([theirs])) is False
    assert draft_orders_mention(mapping, "hetrombopag", None) is False


def test_draft_order_without_timing_has_no_dose(mapping):
    out = extract(mapping, draft_orders=[fx.medication_request(status="draft", repeat=False)])
    assert out.facts["has_draft_order"] is True
    assert "draft_daily_dose_mg" not in out.facts and "timing.repeat" in out.problems["draft_daily_dose_mg"]


# --- absent versus false ------------------------------------------------------------------------------------


def test_nothing_supplied_means_unknown_not_false(mapping):
    out = extract(mapping, fx.patient())
    for fact in ("has_neuroblastoma", "thromboembolic_active", "hsct_count", "has_drug_history", "on_therapy",
                 "has_draft_order"):
        assert fact not in out.facts


def test_fetched_but_empty_means_false(mapping):
    out = extract(mapping, fx.patient(), draft_orders=[],
                  supplied={"Patient", "Condition", "Procedure", "MedicationRequest"})
    assert out.facts["has_neuroblastoma"] is False and out.facts["thromboembolic_active"] is False
    assert out.facts["hsct_count"] == 0 and "hsct_date" not in out.facts
    assert out.facts["has_drug_history"] is False and out.facts["on_therapy"] is False
    assert out.facts["has_draft_order"] is False


# --- history cap, bundles, prefetch ---------------------------------------------------------------------------


def test_history_cap_reads_only_the_newest_resources(mapping):
    capped = dataclasses.replace(mapping, history_limit=3)
    procedures = [fx.procedure("709115004", performed=f"2025-0{m}-01") for m in range(1, 6)]
    assert extract(capped, *procedures).facts["hsct_count"] == 3
    assert extract(mapping, *procedures).facts["hsct_count"] == 5
    empties = [fx.observation("777-3", date=f"2026-01-0{d}", dataAbsentReason={"text": "clotted"})
               for d in (2, 3, 4)]
    old = fx.observation("777-3", 60, "10*9/L", date="2025-12-01")
    assert "platelets_10e9_l" not in extract(capped, old, *empties).facts
    assert extract(mapping, old, *empties).facts["platelets_10e9_l"] == 60.0


def test_resources_from_every_payload_shape():
    obs, pat = fx.observation("777-3", 50, "10*9/L"), fx.patient()
    assert resources_from(None) == [] and resources_from(fx.operation_outcome()) == []
    assert resources_from(pat) == [pat]
    assert resources_from(fx.bundle([obs, pat])) == [obs, pat]
    assert resources_from(fx.bundle([obs], bundle_type=None)) == [obs]
    assert resources_from([fx.bundle([obs]), None, pat, fx.operation_outcome()]) == [obs, pat]
    assert resources_from(fx.bundle([])) == []


def test_extract_accepts_a_bundle_in_the_resource_list(mapping):
    out = extract_facts(mapping, [fx.bundle([fx.observation("777-3", 50, "10*9/L")])], TODAY)
    assert out.facts["platelets_10e9_l"] == 50.0


def test_prefetch_templates(mapping):
    templates = prefetch_templates(mapping)
    assert templates["patient"] == "Patient/{{context.patientId}}"
    assert templates["platelets"] == ("Observation?patient={{context.patientId}}&code=http://loinc.org|777-3,"
                                      "http://loinc.org|26515-7,http://loinc.org|778-1&_sort=-date&_count=100")
    assert templates["conditions"] == "Condition?patient={{context.patientId}}"
    assert templates["procedures"] == "Procedure?patient={{context.patientId}}"
    assert templates["medications"] == "MedicationRequest?patient={{context.patientId}}"
    assert set(templates) == {"patient", "weight", "platelets", "alt", "ast", "bilirubin", "ecog", "conditions",
                              "procedures", "medications"}
    assert all(re.fullmatch(r"[^{}]*(\{\{context\.patientId\}\}[^{}]*)+", t) for t in templates.values())


# --- properties -----------------------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12) | st.sampled_from(["2026-01-03", "0001-01-01T00:00:00+08:00", "I48.9", "mg", "d"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)


def _samples() -> list[dict]:
    return [fx.patient(),
            fx.observation("1742-6", 50, "U/L", ranges=[fx.reference_range(40, "U/L", text="0-40", type_code="normal",
                                                                           age=(1, 18, "a"))]),
            fx.observation("89247-1", valueCodeableConcept={"coding": [{"system": fx.LOINC, "code": "LA9622-7"}]}),
            fx.condition("I48.91", fx.ICD10CM, onset=None, onset_period="2025-01-01", recorded="2025-01-02"),
            fx.procedure("709115004", period=True),
            fx.medication_request(bounds_start="2025-12-01", display="Hetrombopag")]


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_malformed_input_never_raises(mapping, data):
    """A client may send anything: extraction must still answer, with problems rather than exceptions."""
    resource = copy.deepcopy(data.draw(st.sampled_from(_samples())))
    path = data.draw(st.sampled_from([p for p in json_paths(resource) if p[:1] != ("resourceType",)]))
    resource = replace_at(resource, path, data.draw(_JSON))
    out = extract_facts(mapping, [resource, fx.patient()], TODAY, draft_orders=[resource],
                        supplied={"Condition", "Procedure", "MedicationRequest"})
    assert not set(out.facts) & set(out.problems)
    json.dumps(out.facts, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(birth=st.dates(date(1900, 1, 1), date(2026, 1, 5)), today=st.dates(date(2000, 1, 1), date(2100, 1, 1)))
def test_age_is_whole_years_since_the_last_birthday(mapping, birth, today):
    out = extract(mapping, fx.patient(birth.isoformat()), today=today)
    if birth > today:
        assert "age_years" not in out.facts
    else:
        assert out.facts["age_years"] == today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


# --- coded Patient attributes (US Core race extension) ------------------------------------------

_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
_CDC = "urn:oid:2.16.840.1.113883.6.238"


def _with_race(*parts: tuple[str, str]) -> dict:
    patient = fx.patient("1990-01-01")
    patient["extension"] = [{"url": _RACE, "extension": [
        {"url": url, "valueCoding": {"system": _CDC, "code": code}} for url, code in parts]}]
    return patient


@pytest.mark.parametrize("parts, expected", [
    ([("ombCategory", "2028-9"), ("detailed", "2034-7")], True),  # Asian, Chinese
    ([("ombCategory", "2028-9"), ("detailed", "2029-7")], False),  # Asian, Asian Indian
    ([("ombCategory", "2106-3")], False),  # White only
])
def test_the_most_specific_race_code_recorded_decides_ancestry(mapping, parts, expected):
    out = extract(mapping, _with_race(*parts))
    assert out.facts["east_asian_ancestry"] is expected


def test_the_broad_category_alone_or_no_extension_leaves_ancestry_missing_with_why(mapping):
    broad = extract(mapping, _with_race(("ombCategory", "2028-9")))
    assert "east_asian_ancestry" not in broad.facts
    why = broad.problems["east_asian_ancestry"]
    assert "2028-9" in why and "does not decide" in why
    absent = extract(mapping, fx.patient("1990-01-01"))
    assert "not recorded" in absent.problems["east_asian_ancestry"]
