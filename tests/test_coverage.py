"""What the written tests cover: `cdsrules test --coverage`, the threshold `cdsrules release` enforces, and the
workbench's version page. Coverage is read from the real engine's evaluations of the shipped rules and of copies
of the rules tree in which a case is removed or the threshold is changed."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engine.coverage import Threshold, coverage_of, holds, shortfalls
from engine.loader import load_ruleset, ruleset_files
from engine.runtime import Engine
from engine.testing import run_tests
from engine.versions import read_manifest, read_threshold
from tests.helpers import ROOT, edited
from tests.workbench_app import make_app

CLI = Path(sys.executable).parent / "cdsrules"
RULES = ROOT / "rules"
ENGINE = Engine()
HETROMBOPAG_DRAFT = Path("hetrombopag") / "1.1.0.tests.yaml"
MISSING_DOSE_CASE = "review due without the current dose -> no titration step, data missing"
ELTROMBOPAG_TESTS = Path("eltrombopag-itp") / "1.0.0.tests.yaml"
LEVEL_25_CASE = "14 days at 25 mg, platelets 49 -> one level up to 50 mg"


def cdsrules(*args: object, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def rules_copy(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    return rules


def remove_case(path: Path, name: str) -> None:
    """Cut one case (from its `- name:` line to the next case) out of a tests file."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    start = lines.index(f"  - name: {name}\n")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("  - name: ")), len(lines))
    path.write_text("".join(lines[:start] + lines[end:]), encoding="utf-8")


def set_threshold(rules: Path, ruleset_id: str, threshold: dict) -> None:
    manifest = rules / ruleset_id / "releases.yaml"
    data = yaml.safe_load(manifest.read_text(encoding="utf-8"))
    manifest.write_text(yaml.safe_dump({"ruleset": data["ruleset"], "coverage": threshold,
                                        "releases": data["releases"]}, sort_keys=False), encoding="utf-8")


# --- the shipped rules ------------------------------------------------------------------------------------------


def test_every_released_version_and_the_draft_meet_the_threshold_and_the_json_says_so(tmp_path):
    out = tmp_path / "coverage.json"
    result = cdsrules("test", "rules/hetrombopag", "rules/eltrombopag-itp/1.0.0.yaml", "--coverage",
                      "--coverage-json", out)
    assert result.returncode == 0, result.stdout + result.stderr
    for ref in ("hetrombopag@1.0.0", "hetrombopag@1.0.1", "hetrombopag@1.1.0", "eltrombopag-itp@1.0.0"):
        assert f"{ref}: coverage of " in result.stdout
    assert result.stdout.count(": met\n") == 4 and "NOT MET" not in result.stdout
    report = json.loads(out.read_text())
    assert report["meets_threshold"] is True
    by_ref = {v["ruleset"]: v for v in report["versions"]}
    assert set(by_ref) == {"hetrombopag@1.0.0", "hetrombopag@1.0.1", "hetrombopag@1.1.0", "eltrombopag-itp@1.0.0"}
    for version in by_ref.values():
        assert version["rules"]["covered"] == version["rules"]["total"] > 0
        assert version["table_rows"]["covered"] == version["table_rows"]["total"] > 0
        assert version["topics"]["missing"] == [] and version["meets_threshold"] and version["below"] == []
    assert {"titration-increase", "stop-platelets"} <= set(by_ref["hetrombopag@1.0.1"]["topics"]["produced"])


def test_the_default_threshold_is_every_rule_and_every_row():
    assert read_threshold(RULES / "hetrombopag") == Threshold(rules=100, table_rows=100, conditions=0)


def test_conditions_read_on_the_facts_agree_with_the_engine_for_every_case():
    """The coverage of condition parts reads them on an evaluation's facts; on the whole condition of every rule,
    that reading must say exactly what the engine did: true where the rule fired, false where it did not."""
    compared = 0
    for file in ruleset_files([RULES]):
        ruleset = load_ruleset(file)
        for result in run_tests(ruleset, ENGINE):
            assert result.evaluation is not None, result.differences
            for rule in ruleset.rules:
                fired = rule.id in result.evaluation.fired_rules
                assert holds(ruleset, rule.when, result.evaluation.facts) == fired, (file, result.name, rule.id)
                compared += 1
    assert compared > 10_000


def test_a_site_choice_the_file_does_not_ship_is_listed_apart_then_counted_when_set(tmp_path):
    released = load_ruleset(RULES / "eltrombopag-itp" / "1.0.0.yaml")
    coverage = coverage_of(released, run_tests(released, ENGINE))
    assert "liver-safety-stop" in coverage.unreachable_rules and "liver-safety-stop" not in coverage.rules
    assert shortfalls(coverage, Threshold()) == []
    rules = rules_copy(tmp_path)
    path = rules / "eltrombopag-itp" / "1.0.0.yaml"
    path.write_text(edited(path.read_text(), "  liver_action:\n    value: warn\n",
                           "  liver_action:\n    value: stop\n"))
    stop = load_ruleset(path)
    changed = coverage_of(stop, run_tests(stop, ENGINE))
    assert "liver-safety-stop" not in changed.unreachable_rules
    assert changed.rules["liver-safety-stop"] is True  # the ALT case of the tests file reaches it now


# --- below the threshold ----------------------------------------------------------------------------------------


def test_a_removed_case_fails_the_coverage_run_naming_the_rule(tmp_path):
    rules = rules_copy(tmp_path)
    remove_case(rules / HETROMBOPAG_DRAFT, MISSING_DOSE_CASE)
    plain = cdsrules("test", rules / "hetrombopag")
    assert plain.returncode == 0, plain.stdout  # the tests that remain pass
    result = cdsrules("test", rules / "hetrombopag", "--coverage")
    assert result.returncode == 1
    draft = result.stdout[result.stdout.index("hetrombopag@1.1.0: coverage"):]
    assert "rules fired 69/70" in draft and "not fired: missing-current-dose" in draft
    assert "NOT MET" in draft and "uncovered: missing-current-dose" in draft
    assert result.stdout.count(": met\n") == 2  # the released versions keep their cases
    lowered = cdsrules("test", rules / "hetrombopag", "--coverage", "--threshold-rules", "98")
    assert lowered.returncode == 0, lowered.stdout
    assert cdsrules("test", rules, "--coverage", "--threshold-rules", "101").returncode == 2


def test_an_unhit_table_row_is_listed_by_table_and_band(tmp_path):
    rules = rules_copy(tmp_path)
    remove_case(rules / ELTROMBOPAG_TESTS, LEVEL_25_CASE)
    out = tmp_path / "coverage.json"
    result = cdsrules("test", rules / "eltrombopag-itp", "--coverage-json", out)
    assert result.returncode == 1
    assert "table rows hit 12/13" in result.stdout and "not hit: level_above [25, 50)" in result.stdout
    version = json.loads(out.read_text())["versions"][0]
    assert version["table_rows"]["uncovered"] == [{"table": "level_above", "band": "[25, 50)",
                                                   "line": version["table_rows"]["uncovered"][0]["line"]}]
    assert version["meets_threshold"] is False and "level_above [25, 50)" in version["below"][0]


def test_release_is_refused_below_the_threshold_and_the_manifest_is_left_alone(tmp_path):
    rules = rules_copy(tmp_path)
    remove_case(rules / HETROMBOPAG_DRAFT, MISSING_DOSE_CASE)
    manifest = (rules / "hetrombopag" / "releases.yaml").read_text()
    release = ("release", rules / "hetrombopag" / "1.1.0.yaml", "--effective-from", "2027-01-01",
               "--approved-by", "Protocol governance committee")
    refused = cdsrules(*release)
    assert refused.returncode == 1
    assert "refused: the tests of hetrombopag@1.1.0 cover less than the ruleset's threshold" in refused.stderr
    assert "rules 69/70" in refused.stderr and "uncovered: missing-current-dose" in refused.stderr
    assert (rules / "hetrombopag" / "releases.yaml").read_text() == manifest


def test_a_lower_threshold_in_the_manifest_allows_the_release_and_is_kept(tmp_path):
    rules = rules_copy(tmp_path)
    remove_case(rules / HETROMBOPAG_DRAFT, MISSING_DOSE_CASE)
    set_threshold(rules, "hetrombopag", {"rules": 95, "table_rows": 100})
    released = cdsrules("release", rules / "hetrombopag" / "1.1.0.yaml", "--effective-from", "2027-01-01",
                        "--approved-by", "Protocol governance committee")
    assert released.returncode == 0, released.stderr
    assert "1.1.0" in read_manifest(rules / "hetrombopag")
    assert read_threshold(rules / "hetrombopag") == Threshold(rules=95, table_rows=100)


def test_a_threshold_out_of_range_is_a_manifest_error_at_its_line(tmp_path):
    rules = rules_copy(tmp_path)
    set_threshold(rules, "hetrombopag", {"rules": 150})
    result = cdsrules("validate", rules / "hetrombopag")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    manifest = rules / "hetrombopag" / "releases.yaml"
    line = next(i for i, text in enumerate(manifest.read_text().splitlines(), 1) if "rules: 150" in text)
    assert f"{manifest}:{line}:" in result.stderr and "coverage.rules" in result.stderr


# --- the workbench ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def below_threshold(tmp_path_factory):
    """A workbench on a rules copy whose draft lacks one case."""
    directory = tmp_path_factory.mktemp("coverage-workbench")
    rules = rules_copy(directory)
    remove_case(rules / HETROMBOPAG_DRAFT, MISSING_DOSE_CASE)
    return make_app(directory, rules=rules).test_client()


def coverage_section(html: str) -> str:
    return html[html.index('<section id="coverage">'):html.index("</section>", html.index('<section id="coverage">'))]


def test_the_version_page_shows_the_coverage_of_a_released_version(tmp_path):
    html = make_app(tmp_path).test_client().get("/workbench/rulesets/hetrombopag/1.0.1").get_data(as_text=True)
    section = coverage_section(html)
    assert "threshold met" in section and "rules 100%, table rows 100%" in section
    assert "70/70" in section and "5/5" in section and "14/14" in section
    assert '<a href="#coverage">Coverage</a>' in html


def test_the_version_page_names_what_a_draft_leaves_uncovered(below_threshold):
    html = below_threshold.get("/workbench/rulesets/hetrombopag/1.1.0").get_data(as_text=True)
    section = coverage_section(html)
    assert "below the threshold" in section and "69/70" in section
    assert '<a href="#rule-missing-current-dose"><code>missing-current-dose</code></a>' in section
    assert "Below the threshold: rules 69/70" in section
    released = coverage_section(below_threshold.get("/workbench/rulesets/hetrombopag/1.0.1").get_data(as_text=True))
    assert "threshold met" in released


def test_the_version_page_lists_the_rules_a_parameter_rules_out(tmp_path):
    html = make_app(tmp_path).test_client().get("/workbench/rulesets/eltrombopag-itp/1.0.0").get_data(as_text=True)
    section = coverage_section(html)
    assert "Cannot fire with this version's parameters (not counted)" in section
    assert "<code>liver-safety-stop</code>" in section and "13/13" in section
