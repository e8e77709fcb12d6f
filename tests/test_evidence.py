"""Rules citing protocol clauses, the review-by date and the source attributes: the checker, `cdsrules validate`'s
warning and CDS Hooks discovery."""
from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine import versions
from engine.diff import structural_changes
from engine.errors import RulesetErrors
from engine.evidence import clauses, source_attributes, uncited_rules
from engine.loader import load_ruleset
from tests.conftest import RULES_DIR, TODAY
from tests.helpers import demo_text, edited, line_of

CLI = Path(sys.executable).parent / "cdsrules"
AMENDMENT = RULES_DIR / "hetrombopag" / "1.1.0.yaml"


def amendment_in(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hetrombopag" / "1.1.0.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- clauses and citations --------------------------------------------------------------------


def test_the_amendment_cites_declared_clauses_and_leaves_plumbing_uncited():
    ruleset = load_ruleset(AMENDMENT)
    declared = clauses(ruleset)
    start = next(rule for rule in ruleset.rules if rule.id == "start-dose")
    assert start.cites == ("start-day", "start-dose")
    assert "once daily" in declared["start-dose"].text and declared["start-dose"].quoted
    uncited = {rule.id for rule in uncited_rules(ruleset)}
    assert "transplant-day" in uncited and "start-dose" not in uncited


def test_an_unknown_clause_id_is_an_error_at_the_rules_cites_item(tmp_path):
    text = edited(AMENDMENT.read_text(encoding="utf-8"), "  - id: start-dose\n    cites: [start-day, start-dose]\n",
                  "  - id: start-dose\n    cites: [start-day, start-doze]\n")
    path = amendment_in(tmp_path, text)
    with pytest.raises(RulesetErrors) as caught:
        load_ruleset(path)
    [error] = caught.value.errors
    index = next(i for i, rule in enumerate(load_ruleset(AMENDMENT).rules) if rule.id == "start-dose")
    assert error.file == str(path)
    assert error.path == ("rules", index, "cites", 1)
    assert error.line == line_of(text, "    cites: [start-day, start-doze]")
    assert "unknown clause 'start-doze'" in error.message and "did you mean 'start-dose'" in error.message


def test_a_clause_holds_a_quote_or_a_paraphrase_not_both(tmp_path):
    text = edited(AMENDMENT.read_text(encoding="utf-8"), '    quote: "Age<18 years old;"\n',
                  '    quote: "Age<18 years old;"\n    paraphrase: Under eighteen.\n')
    with pytest.raises(RulesetErrors) as caught:
        load_ruleset(amendment_in(tmp_path, text))
    assert any(e.path[:2] == ("clauses", "inclusion-age") for e in caught.value.errors), caught.value.errors


def test_the_diff_names_a_change_of_citations():
    changes = {c.name: c.text for c in structural_changes(load_ruleset(RULES_DIR / "hetrombopag" / "1.0.1.yaml"),
                                                          load_ruleset(AMENDMENT)) if c.kind == "rule"}
    assert changes["start-dose"] == "rule start-dose changed: changed the protocol clauses it cites"


# --- review-by ----------------------------------------------------------------------------------


def released_demo(tmp_path: Path, review_by: str | None, effective_from: str = "2020-01-01") -> Path:
    text = demo_text()
    if review_by:
        text = edited(text, "\nparameters:\n", f"\nreview_by: {review_by}\nparameters:\n")
    path = tmp_path / "rules" / "demo-dosing" / "1.0.0.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(text, encoding="utf-8")
    versions.release(path, dt.date.fromisoformat(effective_from), "Governance board")
    return path


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), "validate", str(path)], capture_output=True, text=True, timeout=60)


def test_validate_warns_when_the_version_in_effect_is_past_its_review_date(tmp_path):
    path = released_demo(tmp_path, "2020-06-30")
    result = validate(path.parent.parent)
    assert result.returncode == 0, result.stderr
    assert f"{path}: warning: demo-dosing@1.0.0, the released version in effect on" in result.stderr
    assert "was due for review by 2020-06-30" in result.stderr


def test_validate_warns_when_the_version_in_effect_has_no_review_date(tmp_path):
    path = released_demo(tmp_path, None)
    result = validate(path.parent.parent)
    assert result.returncode == 0 and f"{path}: warning:" in result.stderr and "has no review-by date" in result.stderr


def test_validate_is_quiet_about_a_review_date_still_ahead_and_a_version_not_yet_in_effect(tmp_path):
    ahead = released_demo(tmp_path / "a", "2999-12-31")
    assert "warning" not in validate(ahead.parent.parent).stderr
    later = released_demo(tmp_path / "b", None, effective_from="2999-01-01")
    assert "warning" not in validate(later.parent.parent).stderr


# --- discovery ----------------------------------------------------------------------------------


@pytest.fixture
def rules_with_amendment_in_effect(tmp_path):
    """The shipped rules with hetrombopag 1.1.0 released and in effect on the tests' date."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    versions.release(rules / "hetrombopag" / "1.1.0.yaml", TODAY - dt.timedelta(days=1), "Governance board")
    return rules


def test_discovery_shows_the_source_attributes_of_the_version_in_effect(make_app, rules_with_amendment_in_effect):
    client = make_app(RULES_DIR=str(rules_with_amendment_in_effect)).test_client()
    services = {s["id"]: s for s in client.get("/cds-services").get_json()["services"]}
    shown = services["hetrombopag-order-sign"]["extension"]["cdsrules.evidence"]
    expected = source_attributes(load_ruleset(rules_with_amendment_in_effect / "hetrombopag" / "1.1.0.yaml"))
    assert shown == expected
    assert shown["version"] == "1.1.0" and shown["reviewBy"] == "2027-07-31"
    assert shown["developer"] and shown["fundingSource"] and shown["releaseDate"] == "2026-01-01"
    assert any("NCT06818916" in c for c in shown["bibliographicCitation"])
    # eltrombopag-itp has no version in effect on that date: no attributes, rather than another version's
    assert "extension" not in services["eltrombopag-itp-patient-view"]
