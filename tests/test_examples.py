"""`cdsrules examples`: the example requests, dated for any day, decide as they did on the day they were written."""
from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import subprocess
from urllib.parse import urlsplit

import requests
from fhir.resources.R4B import get_fhir_model_class

from engine import fhir
from engine.examples import DEFAULT_TEMPLATES, request_for, shift_dates
from tests.conftest import REPO, RULES_DIR, build_app, cdsrules_command

TEMPLATES = REPO / DEFAULT_TEMPLATES
MAPPING = fhir.load_site_mapping(RULES_DIR / "site" / "fhir-r4.yaml")
FULL_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def templates() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(TEMPLATES.glob("*.json"))}


def string_leaves(node, path=()):
    """(path, string) for every string in a JSON document, in document order."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from string_leaves(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from string_leaves(value, path + (index,))
    elif isinstance(node, str):
        yield path, node


def extracted(request: dict, day: dt.date) -> dict:
    """The facts the protocol reads from a request on `day`."""
    resources = fhir.resources_from(list(request["prefetch"].values()))
    drafts = fhir.resources_from(request["context"].get("draftOrders"))
    return fhir.extract_facts(MAPPING, resources, day, draft_orders=drafts).facts


# --- the shift ------------------------------------------------------------------------------------


def test_every_fhir_date_and_datetime_moves_at_its_own_precision_and_stays_valid():
    resources = [
        {"resourceType": "Patient", "id": "2018", "birthDate": "2018-11",
         "identifier": [{"system": "urn:example:mrn", "value": "2019"}],
         "meta": {"lastUpdated": "2026-11-25T23:30:00.123Z"}},
        {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "platelets"},
         "effectiveDateTime": "2026-11-25T08:30:00+08:00", "issued": "2026-11-25T09:00:00.5-05:00"},
        {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/2018"}, "onsetDateTime": "2025",
         "recordedDate": "2026-02-28"},
        {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
         "subject": {"reference": "Patient/2018"}, "medicationCodeableConcept": {"text": "a drug"},
         "dosageInstruction": [{"timing": {"repeat": {"boundsPeriod": {"start": "2026-11-20", "end": "2026-12-31"},
                                                      "timeOfDay": ["08:00:00"]}}}]},
    ]
    moved = shift_dates(resources, 40)
    assert moved[0]["birthDate"] == "2018-12"  # 1 November + 40 days
    assert moved[0]["meta"]["lastUpdated"] == "2027-01-04T23:30:00.123Z"
    assert moved[1]["effectiveDateTime"] == "2027-01-04T08:30:00+08:00"
    assert moved[1]["issued"] == "2027-01-04T09:00:00.5-05:00"
    assert moved[2]["onsetDateTime"] == "2025" and moved[2]["recordedDate"] == "2026-04-09"
    assert moved[3]["dosageInstruction"][0]["timing"]["repeat"] == {
        "boundsPeriod": {"start": "2026-12-30", "end": "2027-02-09"}, "timeOfDay": ["08:00:00"]}
    # names that read like years are left alone
    assert moved[0]["id"] == "2018" and moved[0]["identifier"][0]["value"] == "2019"
    assert moved[2]["subject"]["reference"] == "Patient/2018"
    for resource in moved:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    assert shift_dates(resources, -365)[2]["onsetDateTime"] == "2024"


def test_the_patient_keeps_her_age_and_every_interval_on_any_day():
    """Each day from the anchor over four years (a leap day, every birthday): the same age, the same intervals."""
    for name, template in templates().items():
        anchor = dt.date.fromisoformat(template["anchor"])
        written = dict(string_leaves(template["request"]))
        before = extracted(template["request"], anchor)
        for offset in range(4 * 366):
            day = anchor + dt.timedelta(days=offset)
            request = request_for(template, day)
            assert extracted(request, day)["age_years"] == before["age_years"], (name, day)
            for path, text in string_leaves(request):
                if FULL_DATE.fullmatch(written[path]):  # days before the evaluation day are as they were
                    assert dt.date.fromisoformat(text) - day == dt.date.fromisoformat(written[path]) - anchor
                elif path != ("hookInstance",):
                    assert text == written[path], (name, path)
            assert request["hookInstance"] != template["request"]["hookInstance"]


def test_requests_for_two_days_give_the_same_cards_on_their_own_days(tmp_path, fhir_server):
    answers = []
    for day in (dt.date(2028, 2, 29), dt.date(2033, 7, 15)):
        client = build_app(tmp_path / day.isoformat(), fhir_server, CLOCK=lambda day=day: day).test_client()
        answers.append({name: cards_in_brief(client.post(f"/cds-services/hetrombopag-{template['request']['hook']}",
                                                         json=request_for(template, day)).get_json())
                        for name, template in templates().items()})
    assert answers[0] == answers[1]
    assert any(doses for cards in answers[0].values() for _, _, doses in cards)  # a dose is advised, not withheld


def cards_in_brief(answer: dict) -> list[tuple]:
    """Each card's topic, summary and the daily doses its suggestions order."""
    return [(card["source"]["topic"]["code"], card["summary"], suggested_doses(card)) for card in answer["cards"]]


def suggested_doses(card: dict) -> list[float]:
    return [dose["doseQuantity"]["value"]
            for suggestion in card.get("suggestions", []) for action in suggestion["actions"]
            for instruction in action.get("resource", {}).get("dosageInstruction", [])
            for dose in instruction.get("doseAndRate", [])]


# --- the README's first call ----------------------------------------------------------------------


def readme_call(readme: str) -> tuple[str, dict[str, str], str]:
    """The README's curl line: the URL path it posts to, its headers and the file it sends."""
    line = next(line for line in readme.replace("\\\n", " ").splitlines() if line.startswith("curl "))
    words = shlex.split(line)
    headers = dict(words[i + 1].split(": ", 1) for i, word in enumerate(words) if word == "-H")
    body = next(words[i + 1] for i, word in enumerate(words) if word == "-d").removeprefix("@")
    url = next(word for word in words if word.startswith("http"))
    return urlsplit(url).path, headers, body


def readme_dose_claim(readme: str) -> tuple[float, float, float]:
    """What the README says the call answers: platelets, the current daily dose and the advised one."""
    claim = re.search(r"platelets ([\d.]+) x 10⁹/L on ([\d.]+) mg at a two-weekly review\) the service advises "
                      r"([\d.]+) mg and suggests the changed draft order", " ".join(readme.split()))
    assert claim, "the README no longer says what its call answers"
    return tuple(float(number) for number in claim.groups())


def test_the_readmes_call_advises_the_dose_it_describes_today(tmp_path, plain_server):
    readme = (REPO / "README.md").read_text()
    path, headers, body = readme_call(readme)
    platelets, current, advised = readme_dose_claim(readme)
    serve_recipe = re.search(r"^serve:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.M).group(1)
    assert "cdsrules examples\n" in serve_recipe  # `make serve` writes the requests for today before serving
    subprocess.run(cdsrules_command() + ["examples", "--out", str(tmp_path / "examples")], cwd=REPO, check=True,
                   capture_output=True, timeout=60)
    request = (tmp_path / body).read_bytes()  # the README's path, relative to where the examples were written
    draft = json.loads(request)["context"]["draftOrders"]["entry"][0]["resource"]
    response = requests.post(plain_server.base_url + path, data=request, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    [card] = [card for card in response.json()["cards"] if suggested_doses(card)]
    figures = {float(number) for number in re.findall(r"\d+(?:\.\d+)?", card["summary"])}
    assert {platelets, current, advised} <= figures, card["summary"]
    [action] = [action for suggestion in card["suggestions"] for action in suggestion["actions"]]
    assert action["type"] == "update" and action["resource"]["id"] == draft["id"]  # the draft order, changed
    assert suggested_doses(card) == [advised]
    assert f"one `{card['source']['topic']['code']}` card" in " ".join(readme.split())  # the card it names
