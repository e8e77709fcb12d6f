"""Partial dates, results written as bounds and results not yet final, through the real server: decided where every
value the record allows decides the same, and said on the card where it does not; never a dose from a guess."""
from __future__ import annotations

import copy
import datetime as dt
import re
import shutil

import pytest
import requests

from tests.conftest import (
    RULES_DIR,
    hetrombopag_order,
    order_sign_request,
    patient_record,
    prefetch_for,
    running_server,
)
from tests.fhir_server import FhirData

pytestmark = pytest.mark.timeout(120)
TODAY = dt.date.today()  # the server evaluates on the real date
UCUM = "http://unitsofmeasure.org"


@pytest.fixture(scope="module")
def server(plain_server):
    live = copy.copy(plain_server)  # the shared server, with this module's own attributes
    live.prefetch = next(s for s in requests.get(f"{live.base_url}/cds-services", timeout=10).json()["services"]
                         if s["hook"] == "order-sign")["prefetch"]
    return live


def cards(server, record: list[dict], draft_mg: float = 5) -> list[dict]:
    body = order_sign_request("p1", [hetrombopag_order("draft-1", "p1", draft_mg, "draft", TODAY)],
                              prefetch=prefetch_for(server.prefetch, FhirData(record), "p1"))
    response = requests.post(f"{server.base_url}/cds-services/hetrombopag-order-sign", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["cards"]


def topics(found: list[dict]) -> list[str]:
    return sorted(c["source"]["topic"]["code"] for c in found)


def doses(found: list[dict]) -> list:
    return sorted(str(s["actions"][0]["resource"]["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"])
                  for c in found for s in c.get("suggestions", []))


def unescaped(markdown: str) -> str:
    """The text as a reader sees it: values inserted into card markdown are backslash-escaped."""
    return re.sub(r"\\(.)", r"\1", markdown)


def with_platelets(comparator: str, value: float) -> list[dict]:
    record = patient_record(TODAY)  # on 5 mg for 20 days: a titration review is due
    for resource in record:
        if resource["id"] == "plt1":
            resource["valueQuantity"] = {"value": value, "comparator": comparator, "unit": "10*9/L", "system": UCUM,
                                         "code": "10*9/L"}
    return record


def test_a_count_written_below_the_step_up_threshold_steps_the_dose_up(server):
    found = cards(server, with_platelets("<", 20))  # the draft holds the current 5 mg: it is changed to 7.5
    assert topics(found) == ["dose-mismatch"] and doses(found) == ["7.5"]
    assert "platelets <20" in found[0]["summary"] and "<20 x 10⁹/L" in found[0]["detail"]


def test_a_count_written_above_the_stop_threshold_stops(server):
    assert topics(cards(server, with_platelets(">", 400))) == ["stop-platelets"]


def test_a_bound_that_straddles_a_threshold_is_missing_and_says_why(server):
    found = cards(server, with_platelets("<", 60))  # below 50 steps up, 50 to 100 keeps the dose
    assert topics(found) == ["data-missing"] and doses(found) == []
    shown = unescaped(found[0]["detail"])
    assert "'<60 10*9/L'" in shown and "the decision depends on which" in shown


def pre_therapy(birth_date: str, *extra: dict) -> list[dict]:
    record = patient_record(TODAY, on_therapy=False) + list(extra)
    record[0]["birthDate"] = birth_date
    return record


def test_a_year_month_birth_date_that_fixes_the_age_decides_as_a_full_one(server):
    """Before, a child born in a known month was 'incomplete' and got no start dose."""
    full = cards(server, pre_therapy(TODAY.replace(year=TODAY.year - 10).isoformat()), draft_mg=2.5)
    partial = cards(server, pre_therapy(f"{TODAY.year - 10}-{TODAY.month:02d}"), draft_mg=2.5)
    assert topics(partial) == topics(full) == ["dose-mismatch"] and doses(partial) == doses(full) == ["5"]


def test_a_birth_year_that_leaves_the_age_limit_open_says_which_criterion_and_why(server):
    found = cards(server, pre_therapy(str(TODAY.year - 18)))  # 17 or 18; inclusion requires under 18
    assert topics(found) == ["eligibility-incomplete"] and doses(found) == []
    shown = unescaped(found[0]["detail"])
    assert f"birthDate '{TODAY.year - 18}' is partial" in shown and "17 or 18" in shown


def heart_failure(onset: str) -> dict:
    return {"resourceType": "Condition", "id": "hf1", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "42343007"}]}, "onsetDateTime": onset}


def test_a_partial_onset_wholly_outside_the_exclusion_window_does_not_exclude(server):
    without = cards(server, pre_therapy(TODAY.replace(year=TODAY.year - 10).isoformat()), draft_mg=2.5)
    old = cards(server, pre_therapy(TODAY.replace(year=TODAY.year - 10).isoformat(),
                                    heart_failure(str(TODAY.year - 3))), draft_mg=2.5)
    assert topics(old) == topics(without) and doses(old) == doses(without)


def test_a_partial_onset_across_the_exclusion_window_suggests_no_order(server):
    """The window's first day (365 days ago) falls inside the partial date: some of its days exclude the child."""
    boundary = TODAY - dt.timedelta(days=365)
    if boundary.day > 1:
        onset = f"{boundary.year}-{boundary.month:02d}"
    elif boundary.month > 1:
        onset = str(boundary.year)
    else:
        pytest.skip("on this day no partial date has the window's first day strictly inside it")
    found = cards(server, pre_therapy(TODAY.replace(year=TODAY.year - 10).isoformat(), heart_failure(onset)),
                  draft_mg=2.5)
    assert found and doses(found) == []
    assert all("Not decided for certain" in c["detail"] and f"'{onset}'" in unescaped(c["detail"]) for c in found)


def test_a_newer_preliminary_count_decides_nothing_and_an_older_final_one_not_in_its_place(server):
    """Before, a preliminary 110 stopped therapy; an older final count must not decide instead of it either."""
    record = patient_record(TODAY, platelets=110)
    next(r for r in record if r["id"] == "plt1")["status"] = "preliminary"
    found = cards(server, record)
    assert topics(found) == ["data-missing"] and doses(found) == []
    assert "is preliminary" in unescaped(found[0]["detail"]) and "final" in found[0]["detail"]


def test_a_site_may_let_its_decisions_use_preliminary_results(tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    site = rules / "site" / "fhir-r4.yaml"
    site.write_text(site.read_text().replace("statuses: [final, amended, corrected]\n",
                                             "statuses: [final, amended, corrected, preliminary]\n", 1))
    record = patient_record(TODAY, platelets=110)
    next(r for r in record if r["id"] == "plt1")["status"] = "preliminary"
    with running_server(tmp_path, "--no-auth", "--workers", "1", "--rules", str(rules)) as live:
        live.prefetch = next(s for s in requests.get(f"{live.base_url}/cds-services", timeout=10).json()["services"]
                             if s["hook"] == "order-sign")["prefetch"]
        assert topics(cards(live, record)) == ["stop-platelets"]


def test_too_many_possibilities_to_try_are_never_answered_as_if_none_were_uncertain(server):
    """Two year-only onsets are 365 x 365 combinations, beyond what is tried: the cards say so, no order."""
    record = pre_therapy(TODAY.replace(year=TODAY.year - 10).isoformat(), heart_failure(str(TODAY.year - 1)))
    arrhythmia = {**heart_failure(str(TODAY.year - 1)), "id": "ar1",
                  "code": {"coding": [{"system": "http://snomed.info/sct", "code": "698247007"}]}}
    found = cards(server, record + [arrhythmia], draft_mg=2.5)
    assert found and doses(found) == []
    assert all("Not decided for certain" in c["detail"] for c in found)
