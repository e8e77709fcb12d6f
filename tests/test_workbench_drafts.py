"""Amending by the check page's form and saving drafts, through the real Flask app and store: the server rewrites
one value of the YAML and proposes the next version; a saved draft is listed, opens again, keeps its history, is
never served, and a released version is never saved as a draft."""
from __future__ import annotations

import difflib
import hashlib
import re
from pathlib import Path

import pytest
import yaml

from tests.workbench_app import make_app

REPO = Path(__file__).resolve().parent.parent
AMENDMENT = REPO / "rules" / "hetrombopag" / "1.1.0.yaml"
RELEASED = REPO / "rules" / "eltrombopag-itp" / "1.0.0.yaml"


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path)


@pytest.fixture
def client(app):
    return app.test_client()


def amend(client, edit: dict, text: str | None = None, ruleset: str = "hetrombopag",
          base: str = "hetrombopag@1.1.0"):
    body = {"text": AMENDMENT.read_text() if text is None else text, "ruleset": ruleset, "base": base, "edit": edit}
    return client.post("/workbench/amend.json", json=body)


def changed(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and line[:3] not in ("+++", "---")]


def test_the_check_page_lists_the_drafts_parameters_and_rows_to_amend(client):
    page = client.get("/workbench/check?from=hetrombopag@1.1.0").get_data(as_text=True)
    row = re.search(r'<tr data-parameter="max_age_years">.*?</tr>', page, re.S).group(0)
    assert 'value="18"' in row and 'data-type="number"' in row and ">a<" in row and "protocol" in row
    assert "Inclusion requires an age under this" in row
    assert 'data-table="titration_action_by_platelets" data-row="1" data-field="band" value="[30, 100)"' in page
    assert 'value="hetrombopag@1.1.0"' in page  # the base the proposal compares with


def test_a_parameter_edited_in_the_form_rewrites_that_line_and_proposes_a_minor_version(client):
    answer = amend(client, {"kind": "parameter", "name": "max_age_years", "value": 16})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body = answer.get_json()
    assert changed(AMENDMENT.read_text(), body["text"]) == ["-    value: 18", "+    value: 16"]
    assert "-    value: 18\n+    value: 16\n" in body["diff"]
    assert body["proposal"]["version"] == "1.2.0" and body["proposal"]["level"] == "minor"
    assert "max_age_years" in body["proposal"]["reason"]
    check = client.post("/workbench/check.json", json={"text": body["text"], "ruleset": "hetrombopag"}).get_json()
    assert check["errors"] == []  # the rewritten text is a valid draft, checked like any other


def test_a_row_edited_in_the_form_rewrites_that_row_and_the_check_finds_the_gap(client):
    answer = amend(client, {"kind": "row", "table": "titration_action_by_platelets", "row": 1, "band": "[40, 100)"})
    text = answer.get_json()["text"]
    assert changed(AMENDMENT.read_text(), text) == ['-      - {band: "[30, 100)", output: maintain}',
                                                    '+      - {band: "[40, 100)", output: maintain}']
    check = client.post("/workbench/check.json", json={"text": text, "ruleset": "hetrombopag", "tests": False})
    assert any("gap" in e["message"] for e in check.get_json()["errors"])


def test_an_output_that_names_a_parameter_stays_one(client):
    answer = amend(client, {"kind": "row", "table": "start_dose_by_weight", "row": 0, "output": "high_start_dose_mg",
                            "output_param": True})
    assert changed(AMENDMENT.read_text(), answer.get_json()["text"]) == [
        '-      - {band: "(0, 20]", output: {param: low_start_dose_mg}}',
        '+      - {band: "(0, 20]", output: {param: high_start_dose_mg}}']


@pytest.mark.parametrize(("edit", "message"), [
    ({"kind": "parameter", "name": "no_such", "value": 1}, "no parameter 'no_such'"),
    ({"kind": "row", "table": "no_such", "row": 0, "band": "[0, 1)"}, "no table 'no_such'"),
    ({"kind": "row", "table": "titration_action_by_platelets", "row": 9, "band": "[0, 1)"}, "has no row 9"),
    ({"kind": "delete everything"}, "the edit is"),
])
def test_an_edit_that_names_nothing_is_a_400_saying_what_exists(client, edit, message):
    answer = amend(client, edit)
    assert answer.status_code == 400
    assert message in answer.get_json()["issue"][0]["diagnostics"]


def test_editor_checks_skip_the_tests_and_say_so(client):
    text = AMENDMENT.read_text()
    quick = client.post("/workbench/check.json", json={"text": text, "ruleset": "hetrombopag", "tests": False})
    assert quick.get_json()["tests"] == [] and quick.get_json()["tests_run"] is False
    assert quick.get_json()["ok"] is False  # nothing says its tests pass before they ran
    full = client.post("/workbench/check.json", json={"text": text, "ruleset": "hetrombopag"}).get_json()
    assert full["tests_run"] is True and full["tests"] and full["ok"] is True


def test_a_posted_drafts_problems_go_to_the_editor_to_mark_as_it_opens(client):
    broken = AMENDMENT.read_text().replace("    value: 18\n", "    value: eighteen\n", 1)
    page = client.post("/workbench/check", data={"text": broken, "ruleset": "hetrombopag"}).get_data(as_text=True)
    problems = re.search(r"data-problems='([^']*)'", page).group(1)
    assert "eighteen" in problems and '"line": ' in problems


# --- saving ---------------------------------------------------------------------------------


def save(client, text: str, version: str, ruleset: str = "hetrombopag", **headers):
    return client.post("/workbench/drafts/save", data={"text": text, "ruleset": ruleset, "save_version": version,
                                                       "base": "hetrombopag@1.1.0"}, headers=headers)


def test_a_saved_draft_is_listed_opens_again_and_keeps_its_history(app, client):
    text = amend(client, {"kind": "parameter", "name": "max_age_years", "value": 16}).get_json()["text"]
    saved = save(client, text, "1.2.0")
    assert saved.status_code == 303
    assert saved.headers["Location"].endswith("/workbench/check?draft=hetrombopag@1.2.0&saved=1")
    page = client.get(saved.headers["Location"]).get_data(as_text=True)
    assert "Saved as draft hetrombopag@1.2.0." in page and "Revision 1" in page
    stored = app.extensions["cdsrules.workbench"].store.draft("hetrombopag", "1.2.0")
    assert yaml.safe_load(stored.text)["version"] == "1.2.0"  # the version line set to the saved version
    assert changed(text, stored.text) == ["-version: 1.1.0", "+version: 1.2.0"]
    assert stored.text_sha256 == hashlib.sha256(stored.text.encode()).hexdigest() and stored.author is None
    assert f"{stored.text_sha256[:12]}" in page and "value: 16" in page

    listing = client.get("/workbench/").get_data(as_text=True)
    row = re.search(r'<tr class="saved-draft" data-ruleset="hetrombopag" data-version="1.2.0".*?</tr>', listing, re.S)
    assert row and "draft (saved)" in row.group(0) and "never served" in row.group(0)
    assert "/workbench/check?draft=hetrombopag@1.2.0" in row.group(0)

    again = save(client, stored.text.replace("value: 16", "value: 15"), "1.2.0")
    assert again.headers["Location"].endswith("saved=2")
    history = app.extensions["cdsrules.workbench"].store.draft_history("hetrombopag", "1.2.0")
    assert [("value: 16" in d.text, "value: 15" in d.text) for d in history] == [(True, False), (False, True)]
    assert "value: 15" in client.get("/workbench/check?draft=hetrombopag@1.2.0").get_data(as_text=True)


def test_a_released_version_is_never_saved_as_a_draft(app, client):
    refused = save(client, RELEASED.read_text(), "1.0.0", ruleset="eltrombopag-itp")
    assert refused.status_code == 409
    page = refused.get_data(as_text=True)
    assert "eltrombopag-itp@1.0.0 is released; a released version can never be a draft" in page
    assert "id: eltrombopag-itp" in page  # the text is kept on the page, not lost
    assert save(client, AMENDMENT.read_text(), "1.1.0").status_code == 409  # a draft file's version is the file's
    assert save(client, AMENDMENT.read_text(), "1.2").status_code == 400
    assert save(client, AMENDMENT.read_text(), "1.2.0-" + "x" * 50).status_code == 400  # longer than a version
    assert save(client, "- not a ruleset\n", "1.3.0").status_code == 400
    assert app.extensions["cdsrules.workbench"].store.drafts() == []


def test_the_author_is_the_user_the_trusted_proxy_names(tmp_path):
    app = make_app(tmp_path, auth={"workbench": {"trusted_header": "X-Forwarded-User"}})
    client = app.test_client()
    saved = save(client, AMENDMENT.read_text(), "1.4.0", **{"X-Forwarded-User": "pharmacist.kim"})
    assert saved.status_code == 303
    assert app.extensions["cdsrules.workbench"].store.draft("hetrombopag", "1.4.0").author == "pharmacist.kim"
    assert "saved by pharmacist.kim" in client.get("/workbench/", headers={"X-Forwarded-User": "x"}).get_data(
        as_text=True)


def test_a_saved_draft_is_never_served(tmp_path):
    from webhook.app import create_app

    app = create_app({"RULES_DIR": str(REPO / "rules"), "DB_URL": f"sqlite:///{tmp_path / 'cds.db'}",
                      "AUTH_CONFIG": None, "WORKBENCH": True})
    client = app.test_client()
    before = client.get("/cds-services").get_json()
    text = AMENDMENT.read_text().replace("hooks: [patient-view, order-select, order-sign]", "hooks: [patient-view]")
    assert save(client, text, "9.0.0").status_code == 303
    assert client.get("/cds-services").get_json() == before


def test_the_rulesets_page_lists_the_files_when_the_saved_drafts_cannot_be_read(app, client):
    client.get("/workbench/")  # the store is migrated by then
    with app.extensions["cdsrules.workbench"].store.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE drafts")
    page = client.get("/workbench/")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Saved drafts are not shown: the saved drafts cannot be read from the store" in text
    assert 'data-ruleset="hetrombopag" data-version="1.0.0"' in text
