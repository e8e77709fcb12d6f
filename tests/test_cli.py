"""The `cdsrules` command as a pharmacist runs it: installed console script, exit codes, readable output."""
import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import DEMO, ROOT, demo_text, edited

CLI = Path(sys.executable).parent / "cdsrules"


def run(*args, cwd=ROOT):
    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_validate_ok():
    result = run("validate", DEMO.parent.parent)
    assert result.returncode == 0, result.stderr
    assert "demo-dosing@1.0.0" in result.stdout


def test_validate_broken_file_names_line_and_path_without_traceback(tmp_path):
    broken = tmp_path / "demo-dosing" / "1.0.0.yaml"
    broken.parent.mkdir()
    broken.write_text(edited(demo_text(), '{band: "(20, inf)"', '{band: "[20.5, inf)"'))
    result = run("validate", broken)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{broken}:" in result.stderr and "gap" in result.stderr
    assert "at tables.start_dose_by_weight.rows.1.band" in result.stderr


def test_validate_yaml_garbage(tmp_path):
    broken = tmp_path / "x" / "1.0.0.yaml"
    broken.parent.mkdir()
    broken.write_text("id: [unclosed\n")
    result = run("validate", broken)
    assert result.returncode == 1 and "YAML syntax error" in result.stderr and "Traceback" not in result.stderr


def test_test_command_reports_cases_and_fails_on_a_wrong_expectation(tmp_path):
    assert run("test", DEMO).returncode == 0
    wrong = tmp_path / "demo-dosing" / "1.0.0.yaml"
    wrong.parent.mkdir()
    wrong.write_text(edited(demo_text(), "facts: {start_dose_mg: 10}", "facts: {start_dose_mg: 15}"))
    result = run("test", wrong)
    assert result.returncode == 1
    assert "FAIL  light patient starts low" in result.stdout
    assert "fact start_dose_mg: expected 15, got 10" in result.stdout


def test_evaluate_prints_decisions_and_trace(tmp_path):
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps({"weight_kg": 12, "weight_date": "2026-03-09"}))
    result = run("evaluate", DEMO, "--facts", facts, "--date", "2026-03-10")
    assert result.returncode == 0, result.stderr
    assert "start-dose: Start Demodrug 10 mg once daily" in result.stdout
    assert "weight_kg = 12 exists" in result.stdout
    as_json = json.loads(run("evaluate", DEMO, "--facts", facts, "--date", "2026-03-10", "--json").stdout)
    assert as_json["decisions"][0]["suggestion"]["daily_dose"] == 10


def test_explain_reads_as_plain_language():
    result = run("explain", DEMO)
    assert result.returncode == 0
    assert "days_on_therapy is at least 7 d (review_interval_days)" in result.stdout


def test_serve_refuses_without_an_auth_choice():
    result = run("serve", "--port", "1")
    assert result.returncode == 2 and "--no-auth" in result.stderr


def test_serve_refuses_a_weak_key_in_the_auth_config(tmp_path):
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    public = jwt.algorithms.RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 1024).public_key(), as_dict=True)
    (tmp_path / "ehr.jwks.json").write_text(json.dumps({"keys": [{**public, "kid": "short"}]}))
    (tmp_path / "auth.yaml").write_text(
        "base_url: https://cds.example\nissuers:\n  - iss: https://ehr.example\n    jwks_file: ehr.jwks.json\n")
    result = run("serve", "--auth-config", tmp_path / "auth.yaml", "--port", "1",
                 "--db", f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert result.returncode == 2
    assert "key 'short' is refused: an RSA key of 1024 bits" in result.stderr and "Traceback" not in result.stderr


def test_validate_checks_input_facts_against_the_site_mapping(tmp_path):
    import shutil
    shutil.copytree(ROOT / "rules" / "site", tmp_path / "site")
    (tmp_path / "hetrombopag").mkdir()
    text = (ROOT / "rules" / "hetrombopag" / "1.1.0.yaml").read_text()
    (tmp_path / "hetrombopag" / "1.1.0.yaml").write_text(text.replace("platelets_10e9_l", "platelet_count"))
    result = run("validate", tmp_path)
    assert result.returncode == 1
    assert "input fact 'platelet_count' is not produced by the site mapping" in result.stderr


def test_evaluate_a_fhir_bundle_prints_decisions_and_trace():
    bundle = ROOT / "rules" / "hetrombopag" / "tests" / "eligible-lb-mgdl.json"
    result = run("evaluate", ROOT / "rules" / "hetrombopag" / "1.0.0.yaml", "--fhir", bundle, "--date", "2026-03-05")
    assert result.returncode == 0, result.stderr
    assert "start-dose: Start hetrombopag 5 mg orally once daily" in result.stdout
    assert "=> start_dose_mg = 5" in result.stdout
