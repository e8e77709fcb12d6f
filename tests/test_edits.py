"""Structured amendments (engine/edits.py) change only the value they name, on both shipped protocols, and the
next version proposed for an amendment (engine/proposal.py) follows what it changes."""
from __future__ import annotations

import difflib
from pathlib import Path

import pytest
import yaml

from engine.edits import EditError, SetParameter, SetTableRow, SetVersion, apply_edit, apply_edits
from engine.loader import load_ruleset
from engine.proposal import bump, propose_version

REPO = Path(__file__).resolve().parents[1]
PROTOCOLS = [REPO / "rules" / "hetrombopag" / "1.1.0.yaml", REPO / "rules" / "eltrombopag-itp" / "1.0.0.yaml"]
# libyaml's parser where PyYAML has it, as engine.document reads rulesets: the same data as yaml.safe_load, parsed
# several times faster (each case below parses a whole protocol two or three times).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parsed(text: str):
    return yaml.load(text, Loader=_LOADER)


def changed_old_lines(before: str, after: str) -> set[int]:
    """The numbers (from 0) of the lines of `before` that the edit replaced."""
    matcher = difflib.SequenceMatcher(a=before.splitlines(), b=after.splitlines(), autojunk=False)
    return {i for tag, i1, i2, _, _ in matcher.get_opcodes() if tag != "equal" for i in range(i1, max(i2, i1 + 1))}


def block_of(text: str, key: str) -> range:
    """The lines of `  key:` (a parameter) up to its next sibling."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {key}:"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("  ") and lines[i][2] not in " #")
    return range(start, end)


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    """(old line, new line) for every line that differs; the texts must keep their line count."""
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    assert len(old) == len(new), "an edit of one value never adds or removes lines"
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    return [(old[i], new[i]) for tag, i1, i2, _, _ in matcher.get_opcodes() if tag != "equal" for i in range(i1, i2)]


def other_value(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 7
    if "\n" in value:  # a folded description: the same, and one sentence more
        return value.rstrip("\n") + " Amended."
    return f"{value}-amended"


def parameters_of(path: Path) -> list[tuple[Path, str]]:
    return [(path, name) for name in parsed(path.read_text())["parameters"]]


def rows_of(path: Path) -> list[tuple[Path, str, int]]:
    tables = parsed(path.read_text())["tables"]
    return [(path, name, i) for name, table in tables.items() for i in range(len(table["rows"]))]


@pytest.mark.parametrize(("path", "name"), [p for path in PROTOCOLS for p in parameters_of(path)],
                         ids=lambda v: v.parent.name if isinstance(v, Path) else str(v))
def test_setting_any_parameter_changes_its_value_alone(path, name):
    text = path.read_text()
    data = parsed(text)
    new_value = other_value(data["parameters"][name]["value"])
    edited = apply_edit(text, SetParameter(name, new_value))
    assert changed_old_lines(text, edited) <= set(block_of(text, name))
    expected = parsed(text)
    expected["parameters"][name]["value"] = new_value
    assert parsed(edited) == expected  # nothing else of the document changed


@pytest.mark.parametrize(("path", "table", "row"), [r for path in PROTOCOLS for r in rows_of(path)],
                         ids=lambda v: v.parent.name if isinstance(v, Path) else str(v))
def test_changing_any_row_band_and_output_changes_that_row_alone(path, table, row):
    text = path.read_text()
    data = parsed(text)
    old_row = data["tables"][table]["rows"][row]
    output = {"param": "doses_per_day"} if isinstance(old_row["output"], dict) else other_value(old_row["output"])
    band = old_row["band"].replace(",", ", ").replace(",  ", ", ")  # the same interval, written anew
    band = band[:-1] + (")" if band.endswith("]") else "]")
    edited = apply_edit(text, SetTableRow(table, row, band=band, output=output))
    [(old_line, new_line)] = changed_lines(text, edited)
    assert old_row["band"] in old_line and band in new_line
    data["tables"][table]["rows"][row] = {"band": band, "output": output}
    assert parsed(edited) == data


@pytest.mark.parametrize("path", PROTOCOLS, ids=lambda p: p.parent.name)
def test_setting_the_version_changes_that_line_alone_and_the_file_still_loads(path, tmp_path):
    text = path.read_text()
    edited = apply_edit(text, SetVersion("7.8.9"))
    assert changed_lines(text, edited) == [(f"version: {parsed(text)['version']}\n", "version: 7.8.9\n")]
    draft = path.parent / "7.8.9.yaml"
    assert load_ruleset(draft, edited).version == "7.8.9"  # loaded as that file would be: tests and bundles found


def test_edits_keep_comments_flow_style_and_quotes_byte_for_byte():
    text = PROTOCOLS[0].read_text()
    edited = apply_edits(text, [SetTableRow("titration_action_by_platelets", 1, band="[35, 100)"),
                                SetParameter("performance_scale", "Lansky"), SetVersion("1.2.0")])
    changes = changed_lines(text, edited)
    assert [new for _, new in changes] == ["version: 1.2.0\n", "    value: Lansky\n",
                                           '      - {band: "[35, 100)", output: maintain}\n']
    assert [line for line in text.splitlines() if line.lstrip().startswith("#")] == \
        [line for line in edited.splitlines() if line.lstrip().startswith("#")]


def test_a_value_that_would_read_as_another_type_is_quoted():
    text = "id: x\nversion: 1.0.0\nparameters:\n  mode: {value: ECOG, unit: '', description: d, source: protocol}\n"
    assert "value: \"true\"" in apply_edit(text, SetParameter("mode", "true"))
    assert "value: \"a: b\"" in apply_edit(text, SetParameter("mode", "a: b"))
    assert parsed(apply_edit(text, SetParameter("mode", "12")))["parameters"]["mode"]["value"] == "12"


def test_a_bare_parameter_is_set_itself():
    text = "id: x\nparameters:\n  limit: 5  # mg\n  other: 1\n"
    assert apply_edit(text, SetParameter("limit", 7.5)) == "id: x\nparameters:\n  limit: 7.5  # mg\n  other: 1\n"


def test_a_row_output_becomes_a_parameter_and_back():
    text = "tables:\n  t:\n    rows:\n      - {band: \"[0, 1)\", output: low}\n"
    to_param = apply_edit(text, SetTableRow("t", 0, output={"param": "high_dose"}))
    assert to_param == "tables:\n  t:\n    rows:\n      - {band: \"[0, 1)\", output: {param: high_dose}}\n"
    assert apply_edit(to_param, SetTableRow("t", 0, output=2.5)) == text.replace("low", "2.5")


@pytest.mark.parametrize(("edit", "message"), [
    (SetParameter("no_such_parameter", 1), "no parameter 'no_such_parameter'"),
    (SetTableRow("no_such_table", 0, output=1), "no table 'no_such_table'"),
    (SetTableRow("titration_action_by_platelets", 3, output="stop"), "has no row 3 (it has 3"),
    (SetTableRow("titration_action_by_platelets", -1, output="stop"), "has no row -1"),
    (SetTableRow("titration_action_by_platelets", 0), "changes neither its band nor its output"),
    (SetParameter("max_age_years", float("nan")), "not a value a ruleset can hold"),
])
def test_an_edit_that_names_nothing_is_refused_with_what_exists(edit, message):
    with pytest.raises(EditError, match=message.replace("(", r"\(")):
        apply_edit(PROTOCOLS[0].read_text(), edit)


def test_text_that_is_not_yaml_is_refused_with_its_line():
    with pytest.raises(EditError, match="line 2"):
        apply_edit("id: x\n  version: 1.0.0\n", SetVersion("1.0.1"))
    with pytest.raises(EditError, match="must be a mapping"):
        apply_edit("- a\n- b\n", SetVersion("1.0.1"))


# --- the next version -----------------------------------------------------------------------


def hetrombopag() -> dict:
    return parsed(PROTOCOLS[0].read_text())


def test_a_parameter_value_is_a_minor_change_with_the_reason():
    old = hetrombopag()
    new = parsed(apply_edit(PROTOCOLS[0].read_text(), SetParameter("max_age_years", 16)))
    proposal = propose_version("1.1.0", old, new)
    assert (proposal.version, proposal.level) == ("1.2.0", "minor")
    assert "parameter max_age_years changed: 18 a [protocol] -> 16 a [protocol]" in proposal.reason


def test_a_table_row_is_a_minor_change_above_every_released_and_taken_version():
    old = hetrombopag()
    new = parsed(apply_edit(PROTOCOLS[0].read_text(),
                                    SetTableRow("titration_action_by_platelets", 0, output="maintain")))
    proposal = propose_version("1.0.1", old, new, taken={"1.0.0", "1.0.1", "1.1.0"}, released={"1.0.0", "1.0.1"})
    assert (proposal.version, proposal.level) == ("1.2.0", "minor")
    assert "table titration_action_by_platelets rows changed" in proposal.reason


def test_wording_only_is_a_patch():
    old, new = hetrombopag(), hetrombopag()
    new["parameters"]["max_age_years"]["description"] = "Reworded."
    new["rules"][3]["explanation"] = "Reworded too."
    decide = next(r for r in new["rules"] if "decide" in r["then"])["then"]["decide"]
    decide["summary"] = "New card wording"
    new["description"] = "A new description."
    proposal = propose_version("1.1.0", old, new)
    assert (proposal.version, proposal.level) == ("1.1.1", "patch")
    assert proposal.changes and "patch: " in proposal.reason


def test_comments_only_is_a_patch():
    text = PROTOCOLS[0].read_text()
    proposal = propose_version("1.1.0", parsed(text), parsed("# reviewed\n" + text))
    assert (proposal.version, proposal.level, proposal.changes) == ("1.1.1", "patch", [])


def test_a_condition_change_is_minor():
    old, new = hetrombopag(), hetrombopag()
    rule = next(r for r in new["rules"] if r["id"] == "pre-therapy")
    rule["when"]["all"].pop()
    assert propose_version("1.1.0", old, new).level == "minor"


@pytest.mark.parametrize("remove", ["parameter", "fact", "topic", "hook"])
def test_removing_what_callers_name_is_major(remove):
    old, new = hetrombopag(), hetrombopag()
    if remove == "parameter":
        new["parameters"].pop("administration_advice")
    elif remove == "fact":
        new["facts"].pop(next(iter(new["facts"])))
    elif remove == "topic":
        rule = next(r for r in new["rules"] if "decide" in r["then"])
        rule["then"]["decide"]["topic"] = "renamed-topic"
    else:
        new["hooks"] = new["hooks"][:-1]
    proposal = propose_version("1.1.0", old, new)
    assert (proposal.version, proposal.level) == ("2.0.0", "major")
    assert "removed" in proposal.reason


def test_bump_drops_a_pre_release():
    assert [bump("1.2.3-rc.1", level) for level in ("patch", "minor", "major")] == ["1.2.4", "1.3.0", "2.0.0"]
