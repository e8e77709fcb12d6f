"""The amendment diff on the real draft 1.1.0 of the hetrombopag protocol, an amendment of 1.0.1."""
import json
import subprocess
import sys
from pathlib import Path

from engine.diff import diff_versions, render_markdown
from engine.loader import load_ruleset
from tests.helpers import ROOT

CLI = Path(sys.executable).parent / "cdsrules"
OLD = load_ruleset(ROOT / "rules" / "hetrombopag" / "1.0.1.yaml")
NEW = load_ruleset(ROOT / "rules" / "hetrombopag" / "1.1.0.yaml")


def test_structural_change_names_the_table_rows():
    result = diff_versions(OLD, NEW)
    (table,) = [c for c in result.changes if c.kind == "table"]
    assert table.name == "titration_action_by_platelets"
    assert "[0, 50) -> 'increase'" in table.text and "[0, 30) -> 'increase'" in table.text
    assert not [c for c in result.changes if c.kind == "parameter"]
    # the amendment and nothing else: its table, and the two rules whose explanations name the threshold; besides,
    # 1.1.0 is the first version to trace its rules to the protocol's clauses and to state its source attributes
    traceability = {("metadata", "clauses"), ("metadata", "evidence"), ("metadata", "review_by")}
    only_citations = {(c.kind, c.name) for c in result.changes
                      if c.text.endswith("changed: changed the protocol clauses it cites")}
    assert only_citations and all(kind == "rule" for kind, _ in only_citations)
    assert {(c.kind, c.name) for c in result.changes} - traceability - only_citations == {
        ("table", "titration_action_by_platelets"), ("rule", "titration-step-up"), ("rule", "titration-keep-dose")}
    assert {(c.kind, c.name) for c in result.changes} >= traceability


def test_behavioural_impact_lists_cases_that_decide_differently():
    impact = diff_versions(OLD, NEW).impact
    assert impact.cases_compared > 50
    changed = {c.case: c for c in impact.changed}
    case = changed["platelets 49 at review -> maintain (was increase in 1.0.1)"]
    assert case.before == ["titration-increase (warning) 5 mg"]
    assert case.after == ["titration-maintain (info)"]
    assert impact.topics_removed["titration-increase"] == 6
    assert "platelets 99 at review -> maintain" not in changed


def test_identical_versions_have_no_impact():
    result = diff_versions(OLD, OLD)
    assert result.changes == [] and result.impact.changed == []


def test_cli_text_json_and_markdown():
    text = subprocess.run([str(CLI), "diff", "hetrombopag", "1.0.1", "1.1.0"], capture_output=True, text=True,
                          cwd=ROOT)
    assert text.returncode == 0, text.stderr
    assert "9 of" in text.stdout and "cases decide differently" in text.stdout
    as_json = json.loads(subprocess.run([str(CLI), "diff", "hetrombopag", "1.0.1", "1.1.0", "--json"],
                                        capture_output=True, text=True, cwd=ROOT).stdout)
    assert as_json["new"] == "1.1.0" and len(as_json["impact"]["changed"]) == 9
    assert "| topic | cases gaining it | cases losing it |" in render_markdown(diff_versions(OLD, NEW))


def test_cohort_impact(tmp_path):
    cohort = tmp_path / "cohort"
    made = subprocess.run([str(CLI), "cohort", "generate", "--n", "24", "--seed", "3", "--out", str(cohort)],
                          capture_output=True, text=True, cwd=ROOT)
    assert made.returncode == 0, made.stderr
    result = subprocess.run([str(CLI), "diff", "hetrombopag", "1.0.1", "1.1.0", "--cohort", str(cohort), "--json"],
                            capture_output=True, text=True, cwd=ROOT)
    impact = json.loads(result.stdout)["impact"]
    written_cases = len(OLD.tests) + len([c for c in NEW.tests if c["name"] not in {t["name"] for t in OLD.tests}])
    assert impact["cases_compared"] > written_cases + 24  # several dates per cohort patient
    assert any("patient-" in case["case"] for case in impact["changed"]) or impact["changed"]
