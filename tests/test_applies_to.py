"""A release that applies to new therapies only: patients already on therapy keep the versions that applied to them
(the latest released for all: 1.0.1, the correction of 1.0.0), on every card (with why), in the audit and its
replay, and in the amendment diff's cohort counts.

The amendment is eltrombopag-itp 1.1.0, a copy of 1.0.0 that stops for no response below 60 x 10⁹/L instead of 50
and names its therapy start fact, released with `cdsrules release --applies-to new-therapies`."""
from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
import uuid

import pytest
import yaml

from engine import fhir, versions
from engine.choice import choose_version
from engine.decide import facts_from_record, given_facts
from engine.errors import RulesetErrors
from engine.loader import SITE_MAPPING, load_ruleset
from tests.commands import audit_cli
from tests.conftest import RULES_DIR, build_app, order_sign_request, prefetch_for
from tests.records import eltrombopag_draft, itp_record

pytestmark = pytest.mark.timeout(180)

PROTOCOL = "eltrombopag-itp"
EFFECTIVE = dt.date(2026, 12, 20)  # 1.1.0's effective date
DAY = dt.date(2027, 2, 15)  # the calls' date: 1.1.0 is in effect
ON_75_SINCE = DAY - dt.timedelta(days=28)  # 28 days at the highest dose: the no-response check applies
BEFORE, AFTER = dt.date(2026, 11, 1), dt.date(2026, 12, 22)  # therapy starts either side of EFFECTIVE
OLD_REASON = (f"therapy started {BEFORE}, before 1.1.0's effective date {EFFECTIVE}, which applies to new "
              "therapies only")


def cdsrules(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cdsrules.cli", *args], capture_output=True, text=True, timeout=120)


def amendment_text(therapy_start: str | None = "eltrombopag_start_date") -> str:
    """1.0.0 as 1.1.0: no response below 60 (its one test of a count of 50 moved to 60), naming its start fact."""
    text = (RULES_DIR / PROTOCOL / "1.0.0.yaml").read_text().replace("version: 1.0.0", "version: 1.1.0", 1)
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("no_response_platelets:"))
    at = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("value:"))
    lines[at] = lines[at].replace("50", "60")
    text = "".join(lines)
    case = text.index("  - name: 28 days at 75 mg with platelets 50 -> a response, keep\n")
    text = text[:case] + text[case:].replace("platelets_10e9_l: 50", "platelets_10e9_l: 60", 1)
    if therapy_start:
        text = text.replace("\nparameters:\n", f"\ntherapy_start: {therapy_start}\n\nparameters:\n", 1)
    assert yaml.safe_load(text)["parameters"]["no_response_platelets"]["value"] == 60
    return text


@pytest.fixture
def amended(tmp_path):
    """The rules tree with 1.1.0 released for new therapies only, from EFFECTIVE."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    amendment = rules / PROTOCOL / "1.1.0.yaml"
    amendment.write_text(amendment_text())
    shutil.copy(rules / PROTOCOL / "1.0.0.tests.yaml", rules / PROTOCOL / "1.1.0.tests.yaml")  # the coverage
    released = cdsrules("release", str(amendment), "--effective-from", EFFECTIVE.isoformat(),
                        "--approved-by", "Drug and therapeutics committee", "--applies-to", "new-therapies")
    assert released.returncode == 0, released.stderr
    assert "for therapies started from then on" in released.stdout
    return rules


def order(patient: str, ident: str, start: dt.date, daily_mg: float, status: str) -> dict:
    return {"resourceType": "MedicationRequest", "id": ident, "status": status, "intent": "order",
            "medicationCodeableConcept": {"text": "Eltrombopag tablets"},
            "subject": {"reference": f"Patient/{patient}"}, "authoredOn": start.isoformat(),
            "dosageInstruction": [{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d",
                                                         "boundsPeriod": {"start": start.isoformat()}}},
                                   "doseAndRate": [{"doseQuantity": {"value": daily_mg, "unit": "mg",
                                                                     "system": "http://unitsofmeasure.org",
                                                                     "code": "mg"}}]}]}


def on_therapy(patient: str, started: dt.date) -> list[dict]:
    """Started at 50 mg on `started`, at 75 mg for the last 28 days, platelets 55: a response under 1.0.1 (50),
    none under 1.1.0 (60)."""
    return itp_record(DAY, patient, platelets=55) + [order(patient, f"{patient}-start", started, 50, "completed"),
                                                     order(patient, f"{patient}-now", ON_75_SINCE, 75, "active")]


def facts_of(resources: list[dict], drafts: list[dict] | None = None) -> fhir.Extraction:
    return facts_from_record(fhir.load_site_mapping(RULES_DIR / SITE_MAPPING), resources, DAY, drafts)


# --- releasing and checking -------------------------------------------------------------------------------------


def test_the_release_records_whom_it_applies_to_and_leaves_earlier_entries_as_written(amended):
    manifest = (amended / PROTOCOL / versions.MANIFEST).read_text()
    original = (RULES_DIR / PROTOCOL / versions.MANIFEST).read_text()
    assert manifest.startswith(original)  # the 1.0.0 entry as it was written
    assert manifest.count("applies_to") == 1 and "applies_to: new-therapies" in manifest
    releases = versions.read_manifest(amended / PROTOCOL)
    assert releases["1.0.0"].applies_to == "all" and releases["1.1.0"].applies_to == "new-therapies"
    assert cdsrules("validate", str(amended / PROTOCOL)).returncode == 0


def test_new_therapies_only_is_refused_for_a_version_naming_no_therapy_start(tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    amendment = rules / PROTOCOL / "1.1.0.yaml"
    amendment.write_text(amendment_text(therapy_start=None))
    shutil.copy(rules / PROTOCOL / "1.0.0.tests.yaml", rules / PROTOCOL / "1.1.0.tests.yaml")
    refused = cdsrules("release", str(amendment), "--effective-from", EFFECTIVE.isoformat(), "--approved-by", "board",
                       "--applies-to", "new-therapies")
    assert refused.returncode == 1 and "names no therapy_start fact" in refused.stderr
    assert list(versions.read_manifest(rules / PROTOCOL)) == ["1.0.0", "1.0.1"]


@pytest.mark.parametrize("named,message", [("alt_u_l", "must be a date fact read from the record, not number"),
                                           ("start_dose_mg", "not derived"),
                                           ("eltrombopag_start", "unknown fact 'eltrombopag_start' (did you mean")])
def test_therapy_start_must_name_a_declared_date_fact(tmp_path, named, message):
    path = tmp_path / PROTOCOL / "1.1.0.yaml"
    path.parent.mkdir()
    text = amendment_text(therapy_start=named)
    path.write_text(text)
    with pytest.raises(RulesetErrors) as raised:
        load_ruleset(path)
    (error,) = raised.value.errors
    assert message in error.message and error.path == ("therapy_start",)
    assert error.line == text.splitlines().index(f"therapy_start: {named}") + 1


# --- the choice ---------------------------------------------------------------------------------------------------


def test_the_version_chosen_by_when_the_therapy_started(amended):
    ruleset_versions = versions.load_catalog(amended).rulesets[PROTOCOL]
    before = choose_version(ruleset_versions, DAY, facts_of(on_therapy("a", BEFORE)))
    assert (before.ruleset.version, before.reason) == ("1.0.1", OLD_REASON)
    assert before.therapy_start == {"eltrombopag_start_date": BEFORE.isoformat()} and before.in_effect == "1.1.0"
    after = choose_version(ruleset_versions, DAY, facts_of(on_therapy("b", AFTER)))
    assert after.ruleset.version == "1.1.0"
    assert after.reason == (f"in effect on {DAY} (it applies to new therapies only; the therapy started {AFTER}, on "
                            f"or after its effective date {EFFECTIVE})")
    draft = choose_version(ruleset_versions, DAY, facts_of(itp_record(DAY, "c"), [eltrombopag_draft("c", 50, DAY)]))
    assert draft.ruleset.version == "1.1.0" and draft.therapy_start == {}
    assert "no therapy start date (`eltrombopag_start_date`) is on record: a new therapy" in draft.reason
    before_it = choose_version(ruleset_versions, EFFECTIVE - dt.timedelta(days=1), facts_of(on_therapy("a", BEFORE)))
    assert (before_it.ruleset.version, before_it.reason) == ("1.0.1", f"in effect on {EFFECTIVE - dt.timedelta(1)}")


def test_a_therapy_begun_before_a_correction_for_all_follows_the_correction(amended):
    """1.0.1 applies to all: a therapy begun under 1.0.0, or before any release, is decided by 1.0.1, not 1.0.0."""
    ruleset_versions = versions.load_catalog(amended).rulesets[PROTOCOL]
    for start in (dt.date(2026, 6, 1), dt.date(2026, 12, 3)):  # before 1.0.0 took effect; the day 1.0.0 did
        chosen = choose_version(ruleset_versions, DAY, given_facts({"eltrombopag_start_date": start.isoformat()}))
        assert chosen.ruleset.version == "1.0.1"
        assert chosen.reason.startswith(f"therapy started {start}, before 1.1.0's")


def test_a_therapy_with_no_version_for_it_in_effect_gets_the_first_after_its_start(amended):
    """1.0.0 and 1.0.1 retired before 1.1.0: nothing in effect applies to a therapy begun before 1.0.0, so the first
    version released after its start decides, as the card says."""
    for version in ("1.0.0", "1.0.1"):
        versions.retire(amended / PROTOCOL, version, EFFECTIVE - dt.timedelta(days=1))
    ruleset_versions = versions.load_catalog(amended).rulesets[PROTOCOL]
    early = dt.date(2026, 6, 1)
    chosen = choose_version(ruleset_versions, DAY, given_facts({"eltrombopag_start_date": early.isoformat()}))
    assert chosen.ruleset.version == "1.0.0" and chosen.reason.startswith(f"therapy started {early}, before 1.1.0's")


# --- served, audited, replayed ------------------------------------------------------------------------------------


def test_served_cards_name_the_version_that_decided_and_why_and_replay_chooses_the_same(amended, tmp_path,
                                                                                        fhir_server, capsys):
    url = f"sqlite:///{tmp_path / 'cds.db'}"
    app = build_app(tmp_path, fhir_server, RULES_DIR=str(amended), DB_URL=url, CLOCK=lambda: DAY)
    client = app.test_client()
    services = {s["id"]: s for s in client.get("/cds-services").get_json()["services"]}

    def patient_view(patient: str, resources: list[dict]) -> tuple[str, list[dict]]:
        fhir_server.reset(resources)
        body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": patient},
                "prefetch": prefetch_for(services[f"{PROTOCOL}-patient-view"]["prefetch"], fhir_server, patient)}
        answer = client.post(f"/cds-services/{PROTOCOL}-patient-view", json=body)
        assert answer.status_code == 200, answer.data[:500]
        return body["hookInstance"], answer.get_json()["cards"]

    started_before, old_cards = patient_view("a", on_therapy("a", BEFORE))
    assert [c["source"]["topic"]["code"] for c in old_cards] == ["titration-maintain"]  # 55 is a response at 50
    for card in old_cards:
        provenance = card["extension"]["cdsrules.provenance"]
        assert (provenance["version"], provenance["version_reason"]) == ("1.0.1", OLD_REASON)
        assert f"ruleset {PROTOCOL} 1.0.1 ({OLD_REASON})" in card["detail"]

    started_after, new_cards = patient_view("b", on_therapy("b", AFTER))
    assert {c["source"]["topic"]["code"] for c in new_cards} == {"discontinue", "titration-maintain"}  # not at 60
    for card in new_cards:
        provenance = card["extension"]["cdsrules.provenance"]
        assert provenance["version"] == "1.1.0" and provenance["version_reason"].startswith(f"in effect on {DAY} (")
        assert card["detail"].endswith(f"ruleset {PROTOCOL} 1.1.0")  # today's version: nothing more to say

    fhir_server.reset(itp_record(DAY, "c"))
    body = order_sign_request("c", [eltrombopag_draft("c", 50, DAY)],
                              prefetch=prefetch_for(services[f"{PROTOCOL}-order-sign"]["prefetch"], fhir_server, "c"))
    answer = client.post(f"/cds-services/{PROTOCOL}-order-sign", json=body)
    (start_card,) = answer.get_json()["cards"]
    assert start_card["extension"]["cdsrules.provenance"]["version"] == "1.1.0"
    assert "a new therapy" in start_card["extension"]["cdsrules.provenance"]["version_reason"]

    store = app.extensions["cdsrules"].store
    records = {r["hook_instance"]: r for r in store.audit_records()}
    old_record, new_record = records[started_before], records[started_after]
    assert old_record["version"] == "1.0.1" and old_record["version_choice"] == {
        "version": "1.0.1", "reason": OLD_REASON, "in_effect": "1.1.0",
        "therapy_start": {"eltrombopag_start_date": BEFORE.isoformat()}}
    assert old_record["manifest_sha256"] == versions.read_manifest(amended / PROTOCOL)["1.0.1"].sha256
    assert new_record["version"] == "1.1.0" and records[body["hookInstance"]]["version"] == "1.1.0"
    store.engine.dispose()
    capsys.readouterr()
    for record in (old_record, new_record):
        assert audit_cli("audit", "replay", record["decision_id"], "--db", url, "--rules", str(amended)) == 0
        out = capsys.readouterr().out
        assert f"chosen again: {record['version']} ({record['version_choice']['reason']})" in out
        assert out.strip().endswith("identical")


def test_a_replay_says_when_the_released_versions_now_choose_another(amended, tmp_path, fhir_server, capsys):
    """The same record, replayed on a tree where 1.1.0 applies to all: the choice is no longer the one made."""
    url = f"sqlite:///{tmp_path / 'cds.db'}"
    app = build_app(tmp_path, fhir_server, RULES_DIR=str(amended), DB_URL=url, CLOCK=lambda: DAY)
    client = app.test_client()
    template = {s["id"]: s for s in client.get("/cds-services").get_json()["services"]}[f"{PROTOCOL}-patient-view"]
    fhir_server.reset(on_therapy("a", BEFORE))
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": "a"},
            "prefetch": prefetch_for(template["prefetch"], fhir_server, "a")}
    assert client.post(f"/cds-services/{PROTOCOL}-patient-view", json=body).status_code == 200
    store = app.extensions["cdsrules"].store
    (record,) = [r for r in store.audit_records() if r["hook_instance"] == body["hookInstance"]]
    store.engine.dispose()
    manifest = amended / PROTOCOL / versions.MANIFEST
    manifest.write_text(manifest.read_text().replace("  applies_to: new-therapies\n", ""))
    capsys.readouterr()
    assert audit_cli("audit", "replay", record["decision_id"], "--db", url, "--rules", str(amended)) == 1
    assert "DIFFERENT: the released versions now choose 1.1.0, not 1.0.1" in capsys.readouterr().out


# --- the amendment diff on a cohort ------------------------------------------------------------------------------


def test_the_cohort_diff_counts_the_patients_each_choice_affects(amended, tmp_path):
    cohort = tmp_path / "cohort"
    made = cdsrules("cohort", "generate", "--n", "16", "--seed", "1", "--out", str(cohort),
                    "--ruleset", str(amended / PROTOCOL / "1.0.0.yaml"))
    assert made.returncode == 0, made.stderr
    diff = ["diff", "--rules", str(amended), PROTOCOL, "1.0.0", "1.1.0", "--cohort", str(cohort)]
    as_json = json.loads(cdsrules(*diff, "--json").stdout)
    choice = as_json["choice"]
    assert choice["patients"] == 16 and choice["effective_from"] == EFFECTIVE.isoformat()
    assert choice["therapy_start"] == "eltrombopag_start_date"
    changed = list(dict.fromkeys(c["case"] for c in as_json["impact"]["changed"] if c["case"].startswith("patient-")))
    assert choice["if_all"] == changed and changed  # the cohort's patients stopped for no response at 50-59
    # The cohort's therapies all began in 2026, before 1.1.0: as new therapies only, it changes none of them.
    assert choice["if_new_therapies"] == []
    every = json.loads(cdsrules(*diff, "--json", "--effective-from", "2026-01-01").stdout)["choice"]
    assert every["if_new_therapies"] == changed  # taking effect before any of them began: all are new therapies

    text = cdsrules(*diff).stdout
    assert (f"Whom 1.1.0 applies to (cohort of 16 patients; 1.1.0 effective from {EFFECTIVE}, therapy start "
            "`eltrombopag_start_date`):") in text
    assert f"  if it applies to all: {len(changed)} patient(s) decide differently: {', '.join(changed)}" in text
    assert "  if it applies to new therapies only: 0 patient(s) decide differently" in text
    without_cohort = cdsrules("diff", "--rules", str(amended), PROTOCOL, "1.0.0", "1.1.0")
    assert "Whom" not in without_cohort.stdout and "cases decide differently" in without_cohort.stdout
    markdown = cdsrules(*diff, "--markdown").stdout
    assert "## Whom 1.1.0 applies to" in markdown and "- if it applies to new therapies only: 0 patient(s)" in markdown


def test_the_cohort_diff_of_a_draft_without_therapy_start_says_why_it_cannot_count(tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    (rules / PROTOCOL / "1.1.0.yaml").write_text(amendment_text(therapy_start=None))
    cohort = tmp_path / "cohort"
    assert cdsrules("cohort", "generate", "--n", "4", "--seed", "1", "--out", str(cohort),
                    "--ruleset", str(rules / PROTOCOL / "1.0.0.yaml")).returncode == 0
    text = cdsrules("diff", "--rules", str(rules), PROTOCOL, "1.0.0", "1.1.0", "--cohort", str(cohort)).stdout
    assert ("if it applies to new therapies only: cannot be told (1.1.0 names no therapy_start fact: it can only "
            "apply to all)") in text
