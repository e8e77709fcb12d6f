"""A release that applies to new therapies only: patients already on therapy keep the version in effect when their
therapy started, on every card (with why), in the audit and its replay, and in the amendment diff's cohort counts.

The amendment is eltrombopag-itp 1.1.0, a copy of 1.0.0 that stops for no response below 60 x 10⁹/L instead of 50
and names its therapy start fact, released with `cdsrules release --applies-to new-therapies`."""
from __future__ import annotations

import pytest
import yaml

from engine.errors import RulesetErrors
from engine.loader import load_ruleset
from tests.conftest import RULES_DIR

pytestmark = pytest.mark.timeout(180)

PROTOCOL = "eltrombopag-itp"


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


# --- checking ----------------------------------------------------------------------------------------------------


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
