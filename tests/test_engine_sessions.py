"""A session in which no rule fires must be as safe as any other, in a fresh process above all.

durable-rules' core leaves a new session's action context uninitialised and frees it when the session is deleted;
only a started action makes it defined. Before the runtime opened every session with an action of its own, the
first evaluation of a fresh process that fired nothing aborted that process (`munmap_chunk(): invalid pointer`):
each test here therefore runs its case in a process of its own, and checks it exited normally.
"""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.loader import load_ruleset
from engine.sandbox import SandboxEngine
from tests.conftest import REPO, RULES_DIR, cdsrules_command, running_server

pytestmark = pytest.mark.timeout(120)
HETROMBOPAG = RULES_DIR / "hetrombopag" / "1.0.0.yaml"
HOOKS = ["patient-view", "order-select", "order-sign"]

# The first evaluation of a fresh interpreter, on the facts given on stdin; prints what fired.
FIRST_EVALUATION = """
import json, sys
from engine.loader import load_ruleset
from engine.runtime import Engine
case = json.load(sys.stdin)
result = Engine().evaluate(load_ruleset(case["ruleset"]), case["facts"], case["date"], case["hook"])
print(json.dumps({"fired": [f.rule_id for f in result.trace]}))
"""


def first_evaluation(facts: dict, hook: str, date: str = "2026-12-02") -> subprocess.CompletedProcess:
    case = {"ruleset": str(HETROMBOPAG), "facts": facts, "date": date, "hook": hook}
    return subprocess.run([sys.executable, "-c", FIRST_EVALUATION], input=json.dumps(case), cwd=REPO,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("hook", HOOKS)
def test_the_command_line_survives_a_first_evaluation_that_fires_nothing(tmp_path, hook):
    facts = tmp_path / "empty.json"
    facts.write_text("{}")
    done = subprocess.run(cdsrules_command() + ["evaluate", str(HETROMBOPAG), "--facts", str(facts),
                                                "--date", "2026-12-02", "--hook", hook, "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["trace"] == [] and result["decisions"] == []  # the case is the one that fires nothing


def test_a_fresh_sandbox_child_survives_a_first_evaluation_that_fires_nothing():
    sandbox = SandboxEngine()
    try:
        result = sandbox.evaluate(load_ruleset(HETROMBOPAG), {}, "2026-12-02", "patient-view")
    finally:
        sandbox.close()
    assert result.trace == [] and result.decisions == []


def _empty_record_call(base_url: str, patient: str) -> dict:
    """A patient-view for a patient with no protocol data: the Patient, and every other query found nothing."""
    service = next(s for s in requests.get(f"{base_url}/cds-services", timeout=10).json()["services"]
                   if s["hook"] == "patient-view")
    prefetch = {key: {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}
                for key in service["prefetch"]}
    prefetch["patient"] = {"resourceType": "Patient", "id": patient, "birthDate": "1970-01-01"}
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/dr1", "patientId": patient}, "prefetch": prefetch}
    return {"url": f"{base_url}/cds-services/{service['id']}", "json": body}


def test_a_newly_started_server_answers_a_patient_with_no_protocol_data(tmp_path):
    """Every worker is fresh here, so each of these calls is some worker's first evaluation."""
    with running_server(tmp_path, "--no-auth", "--workers", "2") as server:
        for n in range(4):
            response = requests.post(**_empty_record_call(server.base_url, f"no-data-{n}"), timeout=20)
            assert response.status_code == 200
            assert response.json() == {"cards": []}
        assert server.process.poll() is None
        assert "SIGABRT" not in server.log() and "invalid pointer" not in server.log()


FACTS = {  # every kind of input the ruleset reads, each with a value that some rule tests
    "age_years": 8, "weight_kg": 25.0, "weight_date": "2026-11-30", "has_neuroblastoma": True, "hsct_count": 1,
    "hsct_date": "2026-10-01", "platelets_10e9_l": 40.0, "platelets_date": "2026-12-01", "on_therapy": True,
    "current_daily_dose_mg": 5.0, "therapy_start_date": "2026-11-10", "last_dose_change_date": "2026-11-18",
    "has_drug_history": True, "active_order_id": "mr-1", "has_draft_order": True, "draft_order_id": "draft-1",
    "draft_daily_dose_mg": 5.0, "draft_frequency_per_day": 1, "ecog": 1, "ecog_date": "2026-11-29",
    "alt_u_l": 20.0, "alt_date": "2026-12-01", "alt_uln_u_l": 40.0, "ast_u_l": 30.0, "ast_date": "2026-12-01",
    "ast_uln_u_l": 40.0, "bilirubin_umol_l": 8.0, "bilirubin_date": "2026-12-01", "bilirubin_uln_umol_l": 21.0,
    "thromboembolic_active": False,
}


@settings(max_examples=12)
@given(names=st.sets(st.sampled_from(sorted(FACTS))), hook=st.sampled_from(HOOKS))
def test_no_first_evaluation_aborts_its_process(names, hook):
    """Any subset of the inputs, as a fresh process's first evaluation: whatever fires, the process exits normally."""
    done = first_evaluation({name: FACTS[name] for name in names}, hook)
    assert done.returncode == 0, done.stderr[-2000:]
    json.loads(done.stdout)


def test_the_runtime_opens_every_session_with_its_own_rule():
    """The opener is the runtime's, never a protocol's: it appears in no trace and no decision."""
    done = first_evaluation(FACTS, "order-sign")
    assert done.returncode == 0, done.stderr
    fired = json.loads(done.stdout)["fired"]
    assert fired and all(not rule.startswith("_") for rule in fired)
