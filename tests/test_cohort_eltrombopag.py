"""The eltrombopag ITP cohort: drawn from the protocol's own scenario file, one block holds every scenario, and each
scenario's patients get the cards the scenario is about (at signing the first order, on patient-view every
evaluation date); the workbench's therapy timeline simulates its patients."""
from __future__ import annotations

import copy
import json
from datetime import timedelta

import pytest

from engine.cohort import generate_cohort, load_scenarios, resolve, write_cohort
from engine.fhir import extract_facts, load_site_mapping, resources_as_of
from engine.loader import load_ruleset
from engine.runtime import Engine
from tests.helpers import ROOT
from tests.workbench_app import make_app

RULESET_FILE = ROOT / "rules" / "eltrombopag-itp" / "1.0.0.yaml"
RULESET = load_ruleset(RULESET_FILE)
SCENARIOS = load_scenarios(RULESET_FILE.with_name("scenarios.yaml"))
MAPPING = load_site_mapping(ROOT / "rules" / "site" / "fhir-r4.yaml")

# What every patient of a scenario gets: "sign:" topics when the first order is checked at signing (the day before
# day 0, the draft at the scenario's draft_dose if it names one), the others on patient-view on some evaluation date.
EXPECTED = {
    "good-response": {"sign:start-dose", "titration-maintain"},
    "slow-response": {"sign:start-dose", "titration-increase"},
    "no-response": {"sign:start-dose", "titration-increase", "discontinue"},
    "over-response": {"sign:start-dose", "titration-decrease"},
    "high-response": {"sign:start-dose", "hold", "restart"},
    "young-child": {"sign:start-dose"},
    "east-asian": {"sign:start-dose"},
    "asian-category": {"sign:data-missing"},
    "ancestry-unrecorded": {"sign:data-missing"},
    "hepatic-impairment": {"sign:start-dose"},
    "east-asian-hepatic": {"sign:start-dose"},
    "dose-mismatch": {"sign:dose-mismatch"},
    "dose-above-max": {"sign:dose-above-max", "sign:dose-mismatch"},
    "liver-rising": {"liver-safety"},
    "under-one": {"sign:not-recommended", "not-recommended"},
}
START_DOSES = {"young-child": 25, "east-asian": 25, "hepatic-impairment": 25, "east-asian-hepatic": 12.5,
               "good-response": 50}


def _ours(resource: dict) -> bool:
    return resource["resourceType"] == "MedicationRequest" and "Eltrombopag" in resource["medicationCodeableConcept"][
        "text"]


def _topics(patient, engine: Engine) -> set[str]:
    seen: set[str] = set()
    for day in patient.evaluation_dates:
        extraction = extract_facts(MAPPING, resources_as_of(patient.resources, day), day)
        seen |= set(engine.evaluate(RULESET, extraction.facts, day, hook="patient-view",
                                    reasons=extraction.problems).topics())
    first = next((r for r in patient.resources if _ours(r)), None)
    if first is not None:
        draft = copy.deepcopy(first)
        draft["status"] = "draft"
        dose = SCENARIOS.data["scenarios"][patient.scenario].get("draft_dose")
        if dose:
            draft["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] = dose
        day = patient.transplant_date - timedelta(days=1)
        extraction = extract_facts(MAPPING, resources_as_of(patient.resources, day), day, draft_orders=[draft])
        seen |= {f"sign:{t}" for t in engine.evaluate(RULESET, extraction.facts, day, hook="order-sign",
                                                       reasons=extraction.problems).topics()}
    return seen


@pytest.fixture(scope="module", params=[1, 2026])
def block(request):
    return generate_cohort(len(SCENARIOS.block), request.param, ruleset=RULESET)


def test_one_block_holds_every_scenario(block):
    assert sorted(p.scenario for p in block) == sorted(SCENARIOS.block)
    assert set(EXPECTED) | {"untreated"} == set(SCENARIOS.data["scenarios"])


def test_each_scenario_gets_the_cards_it_is_about(block):
    engine = Engine()
    for patient in block:
        topics = _topics(patient, engine)
        assert EXPECTED.get(patient.scenario, set()) <= topics, (patient.scenario, patient.description, topics)
        if patient.scenario == "untreated":
            assert not topics, topics
        assert "data-missing" not in topics, (patient.scenario, topics)


def test_on_every_evaluation_date_at_most_one_order_is_current(block):
    """A restart replaces the held order: replayed after it, the held order reads completed, not on-hold too."""
    restarted = 0
    for patient in block:
        for day in patient.evaluation_dates:
            current = [r["id"] for r in resources_as_of(patient.resources, day)
                       if _ours(r) and r["status"] in ("active", "on-hold")]
            assert len(current) <= 1, (patient.scenario, day, current)
        restarted += any(_ours(r) and r["status"] == "on-hold" for r in patient.resources) and patient.scenario == (
            "high-response")
    assert restarted, "no patient was held and restarted: the test would check nothing"


def test_the_start_dose_is_the_one_the_scenario_names(block):
    for patient in block:
        if patient.scenario in START_DOSES:
            first = next(r for r in patient.resources if _ours(r))
            assert first["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == START_DOSES[
                patient.scenario]


def test_the_cohort_is_drawn_for_the_ruleset_it_is_given():
    assert resolve(RULESET).scenarios.data["ruleset"] == "eltrombopag-itp"
    assert resolve().ruleset.id == "hetrombopag", "the default cohort stays the protocol in service longest"


def test_the_command_writes_the_cohort(tmp_path):
    from tests.commands import cohort_cli
    out = tmp_path / "out"
    assert cohort_cli("cohort", "generate", "--n", "3", "--seed", "4", "--out", str(out),
                      "--ruleset", str(RULESET_FILE)) == 0
    index = json.loads((out / "cohort.json").read_text(encoding="utf-8"))
    assert len(index["patients"]) == 3


def test_the_written_cohort_is_byte_stable(tmp_path):
    write_cohort(generate_cohort(8, 3, ruleset=RULESET), tmp_path / "a")
    write_cohort(generate_cohort(8, 3, ruleset=RULESET), tmp_path / "b")
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == {
        p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}


def test_the_workbench_timeline_simulates_an_eltrombopag_patient(tmp_path):
    client = make_app(tmp_path).test_client()
    page = client.get("/workbench/timeline", query_string={"version": "eltrombopag-itp@1.0.0"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "timeline-chart" in html and 'id="timeline-days"' in html
    assert "platelets_10e9_l" in html and "eltrombopag-itp@1.0.0" in html
    patients = make_app(tmp_path / "b").extensions["cdsrules.workbench"].cohort("eltrombopag-itp")
    high = next(p for p in patients if p.description.startswith("response above 400"))
    page = client.post("/workbench/timeline", data={"version": "eltrombopag-itp@1.0.0", "source": "cohort",
                                                    "patient": high.name, "days": "40"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "hold" in html and "restart" in html


def test_no_literal_of_this_protocol_is_written_in_the_generator():
    import re
    medication = RULESET.medication
    literals = {RULESET.id, medication.concept, medication.display}
    literals |= {str(p.value) if float(p.value) % 1 else f"{p.value:g} mg" for name, p in RULESET.parameters.items()
                 if name.endswith("_mg")}
    codings = SCENARIOS.data["codings"]
    literals |= {c["code"] for group in ("observations", "diagnoses", "history") for c in codings[group].values()}
    literals |= {part["code"] for group in codings["ancestry"]["groups"].values() for key, part in group.items()
                 if key != "text"}
    sources = {file.name: file.read_text(encoding="utf-8").lower()
               for file in (ROOT / "engine" / "cohort").glob("*.py")}
    found = {(name, literal) for literal in literals for name, text in sources.items()
             if re.search(rf"(?<![\w.]){re.escape(literal.lower())}(?![\w])", text)}
    assert not found, f"protocol values written in Python: {sorted(found)}"
