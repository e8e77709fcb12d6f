"""A release that applies to new therapies only: patients already on therapy keep the version in effect when their
therapy started, on every card (with why), in the audit and its replay, and in the amendment diff's cohort counts.

The amendment is eltrombopag-itp 1.1.0, a copy of 1.0.0 that stops for no response below 60 x 10⁹/L instead of 50
and names its therapy start fact, released with `cdsrules release --applies-to new-therapies`."""
from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys

import pytest
import yaml

from engine import versions
from engine.errors import RulesetErrors
from engine.loader import load_ruleset
from tests.conftest import RULES_DIR

pytestmark = pytest.mark.timeout(180)

PROTOCOL = "eltrombopag-itp"
EFFECTIVE = dt.date(2026, 12, 20)  # 1.1.0's effective date


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
    released = cdsrules("release", str(amendment), "--effective-from", EFFECTIVE.isoformat(),
                        "--approved-by", "Drug and therapeutics committee", "--applies-to", "new-therapies")
    assert released.returncode == 0, released.stderr
    assert "for therapies started from then on" in released.stdout
    return rules


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
    refused = cdsrules("release", str(amendment), "--effective-from", EFFECTIVE.isoformat(), "--approved-by", "board",
                       "--applies-to", "new-therapies")
    assert refused.returncode == 1 and "names no therapy_start fact" in refused.stderr
    assert list(versions.read_manifest(rules / PROTOCOL)) == ["1.0.0"]


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
