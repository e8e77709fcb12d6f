"""The second protocol through every feature the first one has: the command line (validate, test, explain, evaluate,
diff, release, retire), a served call with its audit record and replay, and the workbench pages.

Eltrombopag in immune thrombocytopenia is of another shape than hetrombopag after transplant (age bands, ancestry,
decrease, hold and restart); nothing here is special to it but the records."""
from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from engine import versions
from tests.commands import audit_cli
from tests.conftest import RULES_DIR, build_app, order_sign_request, prefetch_for
from tests.records import eltrombopag_draft, itp_record

pytestmark = pytest.mark.timeout(120)

PROTOCOL = "eltrombopag-itp"
RELEASED = RULES_DIR / PROTOCOL / "1.0.1.yaml"  # the version in effect on DAY
DAY = dt.date(2026, 12, 10)  # after the release's effective date


def cdsrules(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cdsrules.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


@pytest.fixture
def amended(tmp_path):
    """The rules tree with an amendment 1.1.0 that raises the no-response count from 50 to 60 (a draft)."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    text = RELEASED.read_text().replace("version: 1.0.1", "version: 1.1.0", 1)
    document = yaml.safe_load(text)
    assert document["parameters"]["no_response_platelets"]["value"] == 50
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("no_response_platelets:"))
    at = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("value:"))
    lines[at] = lines[at].replace("50", "60")
    (rules / PROTOCOL / "1.1.0.yaml").write_text("".join(lines))
    # The amendment carries the tests kept beside 1.0.1: a release needs its rules and table rows covered.
    shutil.copy(rules / PROTOCOL / "1.0.1.tests.yaml", rules / PROTOCOL / "1.1.0.tests.yaml")
    return rules


# --- the command line --------------------------------------------------------------------------------------


def test_validate_test_and_explain_the_second_protocol():
    assert cdsrules("validate", str(RULES_DIR / PROTOCOL)).returncode == 0
    tested = cdsrules("test", str(RULES_DIR / PROTOCOL))
    assert tested.returncode == 0 and f"{PROTOCOL}@1.0.0: " in tested.stdout and " 0 failed" in tested.stdout
    explained = cdsrules("explain", str(RELEASED)).stdout
    assert "platelet_action_by_count" in explained and "restart" in explained


def test_evaluate_a_fhir_bundle_of_the_second_protocol(tmp_path):
    record, drafts = tmp_path / "record.json", tmp_path / "drafts.json"
    for path, resources in ((record, itp_record(DAY)), (drafts, [eltrombopag_draft("itp1", 50, DAY)])):
        path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                                    "entry": [{"resource": r} for r in resources]}))
    evaluated = cdsrules("evaluate", str(RELEASED), "--fhir", str(record), "--draft-orders", str(drafts),
                         "--hook", "order-select", "--date", DAY.isoformat(), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    topics = {d["topic"] for d in json.loads(evaluated.stdout)["decisions"]}
    assert topics == {"start-dose"}


def test_diff_release_and_retire_an_amendment(amended):
    diff = cdsrules("diff", "--rules", str(amended), PROTOCOL, "1.0.1", "1.1.0")
    assert diff.returncode == 0, diff.stderr
    assert "no_response_platelets" in diff.stdout and "60" in diff.stdout
    effective = DAY + dt.timedelta(days=7)
    amendment = amended / PROTOCOL / "1.1.0.yaml"
    release = ["release", str(amendment), "--effective-from", effective.isoformat(),
               "--approved-by", "Drug and therapeutics committee"]
    refused = cdsrules(*release)  # its own tests still expect a response at 50
    assert refused.returncode != 0 and "28 days at 75 mg with platelets 50 -> a response, keep" in refused.stderr
    case = "  - name: 28 days at 75 mg with platelets 50 -> a response, keep\n"
    text = amendment.read_text()
    at = text.index(case)
    amendment.write_text(text[:at] + text[at:].replace("platelets_10e9_l: 50", "platelets_10e9_l: 60", 1))
    released = cdsrules(*release)
    assert released.returncode == 0, released.stderr
    catalog = versions.load_catalog(amended)
    assert catalog.select(PROTOCOL, DAY).version == "1.0.1"
    assert catalog.select(PROTOCOL, effective).version == "1.1.0"
    retired = cdsrules("retire", "--rules", str(amended), "--effective-to", (effective + dt.timedelta(days=30))
                       .isoformat(), PROTOCOL, "1.1.0")
    assert retired.returncode == 0, retired.stderr
    assert versions.load_catalog(amended).select(PROTOCOL, effective + dt.timedelta(days=31)).version == "1.0.1"


# --- served, audited, replayed -------------------------------------------------------------------------------


def test_a_served_call_is_audited_and_replays_identically(tmp_path, fhir_server, capsys):
    url = f"sqlite:///{tmp_path / 'cds.db'}"
    app = build_app(tmp_path, fhir_server, DB_URL=url, CLOCK=lambda: DAY)
    client = app.test_client()
    fhir_server.reset(itp_record(DAY))
    services = {s["id"]: s for s in client.get("/cds-services").get_json()["services"]}
    service = services[f"{PROTOCOL}-order-sign"]
    body = order_sign_request("itp1", [eltrombopag_draft("itp1", 50, DAY)],
                              prefetch=prefetch_for(service["prefetch"], fhir_server, "itp1"))
    answer = client.post(f"/cds-services/{PROTOCOL}-order-sign", json=body)
    assert answer.status_code == 200
    (card,) = answer.get_json()["cards"]
    assert f"ruleset {PROTOCOL} 1.0.1" in card["detail"] and "50 mg once daily" in card["summary"]
    store = app.extensions["cdsrules"].store
    (record,) = [r for r in store.audit_records() if r["hook_instance"] == body["hookInstance"]]
    assert (record["ruleset"], record["version"]) == (PROTOCOL, "1.0.1")
    app.extensions["cdsrules"].store.engine.dispose()
    assert audit_cli("audit", "replay", record["decision_id"], "--db", url, "--rules", str(RULES_DIR)) == 0
    assert capsys.readouterr().out.strip().endswith("identical")


def test_the_hetrombopag_services_stay_quiet_for_an_itp_patient(tmp_path, fhir_server):
    app = build_app(tmp_path, fhir_server, CLOCK=lambda: DAY)
    client = app.test_client()
    fhir_server.reset(itp_record(DAY))
    services = {s["id"]: s for s in client.get("/cds-services").get_json()["services"]}
    body = order_sign_request("itp1", [eltrombopag_draft("itp1", 50, DAY)],
                              prefetch=prefetch_for(services["hetrombopag-order-sign"]["prefetch"], fhir_server,
                                                    "itp1"))
    answer = client.post("/cds-services/hetrombopag-order-sign", json=body)
    assert answer.status_code == 200 and answer.get_json() == {"cards": []}


# --- the workbench --------------------------------------------------------------------------------------------


@pytest.fixture
def workbench(tmp_path, amended):
    from tests.workbench_app import make_app
    return make_app(tmp_path, rules=amended, CLOCK=lambda: DAY).test_client()


def test_every_workbench_page_serves_the_second_protocol(workbench):
    listing = workbench.get("/workbench/").get_data(as_text=True)
    assert f'data-ruleset="{PROTOCOL}" data-version="1.0.0"' in listing
    version = workbench.get(f"/workbench/rulesets/{PROTOCOL}/1.0.0").get_data(as_text=True)
    assert "table-platelet_action_by_count" in version
    check = workbench.post("/workbench/check.json", json={"text": RELEASED.read_text(), "ruleset": PROTOCOL})
    assert check.get_json()["ok"]
    tried = workbench.post("/workbench/try", data={
        "version": f"{PROTOCOL}@1.0.0", "source": "case", "run": "1",
        "case": "held, platelets 149 -> restart one level lower at 25 mg"}).get_data(as_text=True)
    assert 'data-topic="restart"' in tried and "&#34;status&#34;: &#34;active&#34;" in tried
    compare = workbench.get("/workbench/compare.md", query_string={"ruleset": PROTOCOL, "old": "1.0.0",
                                                                    "new": "1.1.0", "cohort": "0"})
    assert compare.get_data(as_text=True).startswith(f"# {PROTOCOL} 1.0.0 → 1.1.0")
    with_cohort = workbench.get("/workbench/compare.md", query_string={"ruleset": PROTOCOL, "old": "1.0.0",
                                                                        "new": "1.1.0"}).get_data(as_text=True)
    assert _cases(with_cohort) > _cases(compare.get_data(as_text=True)) + 100  # the protocol's own cohort
    patients = workbench.get("/workbench/try", query_string={"version": f"{PROTOCOL}@1.0.0"}).get_data(as_text=True)
    assert "; ITP; " in patients and "HSCT" not in patients  # its own synthetic patients, not the other's
    assert workbench.get("/workbench/outcomes").status_code == 200


def _cases(markdown: str) -> int:
    """How many cases a behavioural impact was computed on ("3 of 355 cases decide differently")."""
    return int(re.search(r"of (\d+) cases", markdown).group(1))
