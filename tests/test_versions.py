"""Released versions: refusals, immutability by hash, selection by date across versions, gaps and retirements."""
import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from engine import versions
from engine.errors import RulesetErrors
from tests.helpers import demo_text, edited

D = dt.date.fromisoformat
CLI = Path(sys.executable).parent / "cdsrules"


def write_version(folder: Path, version: str, low_dose: int = 10, break_test: bool = False) -> Path:
    text = edited(demo_text(), "version: 1.0.0", f"version: {version}")
    text = edited(text, "low_dose_mg: {value: 10", f"low_dose_mg: {{value: {low_dose}")
    text = text.replace("facts: {start_dose_mg: 10}", f"facts: {{start_dose_mg: {low_dose}}}")
    text = text.replace("decisions: [{topic: start-dose, dose: 10, action: create}]",
                        f"decisions: [{{topic: start-dose, dose: {low_dose}, action: create}}]")
    if break_test:
        text = text.replace(f"facts: {{start_dose_mg: {low_dose}}}", "facts: {start_dose_mg: 999}")
    path = folder / f"{version}.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def rules(tmp_path):
    folder = tmp_path / "rules" / "demo-dosing"
    folder.mkdir(parents=True)
    return folder


def test_release_records_version_hash_and_approval(rules):
    path = write_version(rules, "1.0.0")
    entry = versions.release(path, D("2026-01-01"), "Governance board", note="first")
    assert entry.sha256 == versions.file_sha256(path)
    catalog = versions.load_catalog(rules.parent)
    assert catalog.select("demo-dosing", D("2026-01-01")).version == "1.0.0"
    assert catalog.select("demo-dosing", D("2025-12-31")) is None


def test_release_refuses_existing_lower_and_failing_versions(rules):
    versions.release(write_version(rules, "1.1.0"), D("2026-01-01"), "board")
    with pytest.raises(versions.ReleaseRefused, match="already released"):
        versions.release(rules / "1.1.0.yaml", D("2026-02-01"), "board")
    with pytest.raises(versions.ReleaseRefused, match="not greater than"):
        versions.release(write_version(rules, "1.0.5"), D("2026-02-01"), "board")
    with pytest.raises(versions.ReleaseRefused, match="test"):
        versions.release(write_version(rules, "1.2.0", break_test=True), D("2026-02-01"), "board")
    assert list(versions.read_manifest(rules)) == ["1.1.0"]


def test_a_draft_is_never_selected(rules):
    versions.release(write_version(rules, "1.0.0"), D("2026-01-01"), "board")
    write_version(rules, "2.0.0", low_dose=12)
    catalog = versions.load_catalog(rules.parent)
    assert catalog.rulesets["demo-dosing"].status("2.0.0", D("2026-06-01")) == "draft"
    assert catalog.select("demo-dosing", D("2027-01-01")).version == "1.0.0"


def test_tampered_released_file_is_refused_everywhere(rules):
    path = write_version(rules, "1.0.0")
    versions.release(path, D("2026-01-01"), "board")
    recorded = versions.file_sha256(path)
    path.write_text(path.read_text() + "# only a comment\n")
    with pytest.raises(RulesetErrors) as caught:
        versions.load_catalog(rules.parent)
    message = str(caught.value)
    assert str(path) in message and recorded in message and versions.file_sha256(path) in message
    result = subprocess.run([str(CLI), "validate", str(rules.parent)], capture_output=True, text=True)
    assert result.returncode == 1 and "released file was modified" in result.stderr


def test_selection_by_date_with_gaps_and_retirements(rules):
    versions.release(write_version(rules, "1.0.0", 10), D("2026-01-01"), "board")
    versions.release(write_version(rules, "1.1.0", 11), D("2026-03-01"), "board")
    versions.release(write_version(rules, "2.0.0", 12), D("2026-06-01"), "board")
    versions.retire(rules, "1.1.0", D("2026-04-30"))
    versions.retire(rules, "1.0.0", D("2026-02-28"))
    catalog = versions.load_catalog(rules.parent)
    expected = {"2025-12-31": None, "2026-01-01": "1.0.0", "2026-02-28": "1.0.0", "2026-03-01": "1.1.0",
                "2026-04-30": "1.1.0", "2026-05-01": None, "2026-05-31": None, "2026-06-01": "2.0.0",
                "2030-01-01": "2.0.0"}
    for day, version in expected.items():
        chosen = catalog.select("demo-dosing", D(day))
        assert (chosen.version if chosen else None) == version, day
    assert catalog.rulesets["demo-dosing"].status("1.0.0", D("2026-07-01")) == "retired"


def test_a_lower_version_that_takes_effect_later_is_named_as_taking_over(rules):
    versions.release(write_version(rules, "1.0.0", 10), D("2026-01-01"), "board")
    versions.release(write_version(rules, "1.1.0", 11), D("2026-06-01"), "board")  # an amendment, scheduled
    assert versions.taken_over(versions.read_manifest(rules)) == [], "each version succeeds a lower one"
    fix = write_version(rules, "1.1.1", 12)
    released = subprocess.run([str(CLI), "release", str(fix), "--effective-from", "2026-03-01", "--approved-by", "B"],
                              capture_output=True, text=True)
    assert released.returncode == 0, released.stderr
    assert "warning: demo-dosing@1.1.0 takes effect on 2026-06-01, after this version" in released.stderr
    catalog = versions.load_catalog(rules.parent)
    assert [catalog.select("demo-dosing", D(day)).version for day in ("2026-05-31", "2026-06-01")] == [
        "1.1.1", "1.1.0"], "the lower version decides from its own later date"
    pairs = versions.taken_over(versions.read_manifest(rules))
    assert [(mine.version, later.version) for mine, later in pairs] == [("1.1.1", "1.1.0")]
    validated = subprocess.run([str(CLI), "validate", str(rules.parent)], capture_output=True, text=True)
    assert validated.returncode == 0, validated.stderr
    assert "demo-dosing@1.1.1 decides only until 2026-06-01: demo-dosing@1.1.0, a lower version" in validated.stderr
    versions.release(write_version(rules, "1.1.2", 12), D("2026-06-01"), "board")  # the fix, kept from that day
    assert versions.load_catalog(rules.parent).select("demo-dosing", D("2026-06-01")).version == "1.1.2"
    assert versions.taken_over(versions.read_manifest(rules)) == [], "1.1.0 never decides now"


def test_release_and_retire_from_the_command_line(rules):
    path = write_version(rules, "1.0.0")
    ok = subprocess.run([str(CLI), "release", str(path), "--effective-from", "2026-01-01", "--approved-by", "Board"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    again = subprocess.run([str(CLI), "release", str(path), "--effective-from", "2026-01-01", "--approved-by", "B"],
                           capture_output=True, text=True)
    assert again.returncode == 1 and "already released" in again.stderr
    retired = subprocess.run([str(CLI), "retire", "demo-dosing", "1.0.0", "--effective-to", "2026-12-31",
                              "--rules", str(rules.parent)], capture_output=True, text=True)
    assert retired.returncode == 0, retired.stderr
    assert versions.read_manifest(rules)["1.0.0"].effective_to == D("2026-12-31")


def test_version_order_is_semantic():
    ordered = ["1.0.0-rc.1", "1.0.0", "1.2.0", "1.10.0", "2.0.0"]
    assert sorted(reversed(ordered), key=versions.version_key) == ordered


def test_shipped_rules_verify():
    catalog = versions.load_catalog(Path(__file__).resolve().parent.parent / "rules")
    assert catalog.select("hetrombopag", D("2026-06-01")).version == "1.0.0"
