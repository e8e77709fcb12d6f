"""The workbench in a real browser: playwright drives Debian's Chromium against the real gunicorn server.

Every page is opened; a broken draft shows its error at its line, and the draft editor marks one as it is typed; a
scenario shows the expected cards; a diff and a timeline are drawn. Screenshots go to test-output/screenshots/. Set
WORKBENCH_DOCS_SCREENSHOT=1 to also refresh docs/workbench.png (the README's picture).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import requests

from tests.browser.live import CHROMIUM, CHROMIUM_ARGS, REPO, SCREENSHOTS, seed_store, start_server
from tests.conftest import free_port

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at "
                                                               "/usr/bin/chromium (.ci/run installs it with apt)")
playwright_api = pytest.importorskip("playwright.sync_api")
RULES = REPO / "rules"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("workbench-live")
    db_url = f"sqlite:///{directory / 'db.sqlite'}"
    seed_store(db_url)
    live = start_server(RULES, free_port(), db_url, directory / "server.log")
    example = (REPO / "examples" / "patient-view-request.json").read_text()
    requests.post(live.base_url + "/cds-services/hetrombopag-patient-view", data=example,
                  headers={"Content-Type": "application/json"}, timeout=10)  # one real audit record too
    yield live
    live.stop()


@pytest.fixture(scope="module")
def page(server):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1300, "height": 900})
        tab.set_default_timeout(15000)
        errors: list[str] = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.errors = errors
        yield tab
        browser.close()


def shot(page, name: str) -> Path:
    path = SCREENSHOTS / f"workbench-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_every_page_opens_without_errors(page, server):
    for name, path, heading in [("rulesets", "/workbench/", "Rulesets"),
                                ("version", "/workbench/rulesets/hetrombopag/1.0.0", "Hetrombopag"),
                                ("version-draft", "/workbench/rulesets/hetrombopag/1.1.0", "Hetrombopag"),
                                ("dossier", "/workbench/rulesets/hetrombopag/1.1.0/dossier", "Release dossier"),
                                ("check", "/workbench/check?from=hetrombopag@1.1.0", "Check a draft"),
                                ("try", "/workbench/try", "Try a patient"),
                                ("timeline", "/workbench/timeline", "Therapy timeline"),
                                ("compare", "/workbench/compare", "Compare versions"),
                                ("outcomes", "/workbench/outcomes", "Alert outcomes")]:
        response = page.goto(server.base_url + path)
        assert response.status == 200, name
        assert heading in page.locator("h1").first.inner_text()
        shot(page, name)
    assert page.errors == []  # no script error, no resource refused by the content security policy


def test_rulesets_and_a_version_with_its_tables(page, server):
    page.goto(server.base_url + "/workbench/")
    row = page.locator("tr[data-ruleset='hetrombopag'][data-version='1.0.0']")
    assert "released" in row.inner_text() and "verified" in row.inner_text()
    assert "draft" in page.locator("tr[data-ruleset='hetrombopag'][data-version='1.1.0']").inner_text()
    row.locator("a", has_text="1.0.0").click()
    bands = page.locator("#table-titration_action_by_platelets g.band")
    assert bands.count() == 3
    assert page.locator("#table-titration_action_by_platelets g.problem").count() == 0


def test_a_broken_draft_shows_the_error_at_its_line(page, server):
    page.goto(server.base_url + "/workbench/check?from=hetrombopag@1.1.0")
    text = page.locator("#draft-text").input_value()
    broken = text.replace('- {band: "[30, 100)", output: maintain}', '- {band: "[40, 100)", output: maintain}')
    line = next(i for i, text in enumerate(broken.splitlines(), 1) if "[40, 100)" in text)
    # As a paste: typing 60 kB through page.fill takes Chromium seconds.
    page.locator("#draft-text").evaluate("(editor, text) => { editor.value = text; }", broken)
    page.click("#check-button")
    assert "problem" in page.locator("#verdict").inner_text()
    marked = page.locator(f"#L{line}")
    assert "error" in marked.get_attribute("class")
    assert "gap" in marked.locator(".line-error").inner_text()
    assert page.locator(".table-chart g.problem.gap").count() == 1  # the gap, drawn where it is
    page.locator(f"a[data-line='{line}']").first.click()  # jumps to the line in the editor, selected
    selected = page.evaluate("() => document.getSelection().toString()")
    assert "[40, 100)" in selected
    shot(page, "check-broken")


def test_a_scenario_shows_the_expected_cards(page, server):
    page.goto(server.base_url + "/workbench/try")
    page.select_option("select[name=version]", "hetrombopag@1.0.0")
    page.wait_for_load_state()
    page.check("input[name=source][value=case]")
    page.select_option("select[name=case]", "FHIR: draft 5 mg twice daily is 10 mg/day, above the maximum")
    page.click("#run-button")
    cards = page.locator("#cards article.cds-card")
    assert cards.count() == 2
    critical = page.locator("article[data-topic='dose-above-max']")
    assert critical.get_attribute("data-indicator") == "critical"
    assert "exceeds the maximum" in critical.locator(".cds-summary").inner_text()
    assert critical.locator(".cds-detail strong").count() >= 1  # the detail's markdown is rendered
    button = page.locator("article[data-topic='dose-mismatch'] button.suggestion")
    assert "Change the draft to 5 mg once daily" in button.inner_text()
    button.click()
    assert '"value": 5' in page.locator("article[data-topic='dose-mismatch'] pre.suggestion-resource").inner_text()
    assert page.locator("#trace").get_by_text("dose-above-max").count() >= 1
    shot(page, "try-scenario")


def test_a_pasted_patient_with_itp_and_an_eltrombopag_draft_gets_the_start_dose(page, server):
    """A Bundle pasted as it came (an 8-year-old with ITP, Japanese in the race extension), the draft typed in."""
    bundle = (RULES / "eltrombopag-itp" / "tests" / "east-asian-child.json").read_text(encoding="utf-8")
    page.goto(server.base_url + "/workbench/try")
    page.select_option("select[name=version]", "eltrombopag-itp@1.0.0")
    page.wait_for_load_state()
    page.select_option("select[name=hook]", "order-select")
    page.fill("input[name=date]", "2026-03-01")
    page.check("input[name=source][value=bundle]")
    page.locator("textarea[name=bundle]").evaluate("(area, text) => { area.value = text; }", bundle)
    page.check("input[name=draft][value=dose]")
    page.fill("input[name=draft_dose]", "25")
    page.fill("input[name=draft_times]", "1")
    page.click("#run-button")
    assert page.locator("#problem").count() == 0
    assert "eltrombopag-itp@1.0.0" in page.locator(".outcome h2").first.inner_text()
    cards = page.locator("#cards article.cds-card")
    assert cards.count() == 1
    start = page.locator("article[data-topic='start-dose']")
    assert start.get_attribute("data-indicator") == "info"
    summary = start.locator(".cds-summary").inner_text()
    assert "Start eltrombopag 25 mg once daily" in summary and "East-/Southeast-Asian ancestry" in summary
    assert "East-/Southeast-Asian ancestry recorded" in start.locator(".cds-detail").inner_text()
    assert start.locator("button.suggestion").count() == 0  # the draft already orders the start dose
    assert page.locator("#trace").get_by_text("start-dose-reduced").count() >= 1
    assert page.errors == []
    shot(page, "try-eltrombopag")


def test_a_timeline_is_drawn(page, server):
    page.goto(server.base_url + "/workbench/timeline?version=hetrombopag@1.0.0")
    options = page.locator("select[name=patient] option").all_inner_texts()
    slow = next(i for i, text in enumerate(options) if "slow recovery" in text)
    page.select_option("select[name=patient]", index=slow)
    page.click("#simulate-button")
    chart = page.locator("#timeline svg.timeline-chart")
    assert chart.count() == 1
    assert chart.locator("rect.mark").count() > 0 and chart.locator("rect.dose-bar").count() > 0
    topics = page.locator("#timeline-days").inner_text()
    assert "start-dose" in topics and re.search(r"stop-(platelets|duration)", topics)
    shot(page, "timeline")
    if os.environ.get("WORKBENCH_DOCS_SCREENSHOT") == "1":
        page.locator("main").screenshot(path=str(REPO / "docs" / "workbench.png"))


def test_a_timeline_of_the_second_protocol_holds_and_restarts(page, server):
    page.goto(server.base_url + "/workbench/timeline?version=eltrombopag-itp@1.0.0")
    options = page.locator("select[name=patient] option").all_inner_texts()
    assert options and not any("HSCT" in text for text in options)  # the protocol's own synthetic patients
    high = next(i for i, text in enumerate(options) if "above 400" in text)
    page.select_option("select[name=patient]", index=high)
    page.click("#simulate-button")
    chart = page.locator("#timeline svg.timeline-chart")
    assert chart.count() == 1 and chart.locator("rect.dose-bar").count() > 0
    topics = page.locator("#timeline-days").inner_text()
    assert "hold" in topics and "restart" in topics
    shot(page, "timeline-eltrombopag")


def test_a_diff_as_a_page(page, server):
    page.goto(server.base_url + "/workbench/compare?ruleset=hetrombopag&old=1.0.0&new=1.1.0&cohort=0")
    assert "titration_action_by_platelets" in page.locator("#changes").inner_text()
    assert page.locator(".compare-tables svg").count() == 2
    assert re.search(r"\d+ of \d+", page.locator("#impact-summary").inner_text())
    assert page.locator("#changed-cases .badge.lost").count() > 0
    shot(page, "compare")


def test_alert_outcomes_from_the_store(page, server):
    page.goto(server.base_url + "/workbench/outcomes")
    stats = page.locator("#outcome-stats").inner_text()
    assert re.search(r"1[2-9]\s+cards shown", stats)
    assert page.locator("#chart-topics svg rect.outcome.overridden").count() >= 2
    assert "Clinical judgment" in page.locator("#override-reasons").inner_text()
    shot(page, "outcomes")


def test_the_draft_editor_marks_a_mistyped_value_at_its_line_as_it_is_typed(page, server):
    page.goto(server.base_url + "/workbench/check?from=hetrombopag@1.1.0")
    editor = page.locator("#draft-editor")
    editor.wait_for()
    assert editor.locator(".cm-lineNumbers .cm-gutterElement").get_by_text("12", exact=True).count() == 1
    assert editor.locator(".cm-foldGutter .cm-gutterElement span").count() > 0  # a fold marker at each block
    assert page.locator("#draft-text").is_hidden()  # still the form's field, written by the editor
    number = page.locator("#draft-text").input_value().splitlines().index("    value: 18") + 1  # max_age_years
    editor.locator(".cm-content").click()
    page.keyboard.press("Control+Home")
    for _ in range(number - 1):
        page.keyboard.press("ArrowDown")
    page.keyboard.press("End")
    page.keyboard.press("Backspace")
    page.keyboard.press("Backspace")
    page.keyboard.type("eighteen")
    assert "value: eighteen" in page.locator("#draft-text").input_value()
    marked = editor.locator(".cm-line", has_text="value: eighteen").locator(".cm-lintRange-error")
    marked.wait_for(timeout=10000)  # the check ran ~400 ms after the last key, without reloading the page
    gutter = editor.locator(".cm-gutter-lint .cm-gutterElement", has=page.locator(".cm-lint-marker-error"))
    assert gutter.count() == 1
    assert "problem" in page.locator("#editor-status").inner_text()
    marked.hover()
    tooltip = page.locator(".cm-tooltip-lint")
    tooltip.wait_for()
    assert "parameter 'max_age_years' is 'eighteen'" in tooltip.inner_text()  # the checker's own message
    assert editor.locator(".cm-activeLineGutter").get_by_text(str(number), exact=True).count() == 1
    shot(page, "check-editor")
    assert page.errors == []  # the editor's styles passed the policy by their nonce; no script error


def scroll_editor_to(page, number: int) -> None:
    """Bring line `number` into the editor's view: CodeMirror draws only the lines near what is shown."""
    page.locator("#draft-editor .cm-scroller").evaluate(
        "(scroller, number) => { const line = scroller.querySelector('.cm-line');"
        " scroller.scrollTop = Math.max(0, (number - 5) * line.getBoundingClientRect().height); }", number)


def test_a_parameter_amended_in_the_form_is_rewritten_proposed_saved_and_listed(page, server):
    page.goto(server.base_url + "/workbench/check?from=hetrombopag@1.1.0")
    page.locator("#draft-editor").wait_for()
    field = page.locator("#amend-form input[data-name='max_age_years']")
    assert field.input_value() == "18"
    field.fill("16")
    field.press("Tab")  # leaving the field sends the edit
    page.locator("#proposal", has_text="Proposed version 1.2.0").wait_for()
    assert "minor" in page.locator("#proposal").inner_text()
    assert "+    value: 16" in page.locator("#amend-diff").inner_text()
    text = page.locator("#draft-text").input_value()
    assert "    value: 16\n" in text and "    value: 18\n" not in text
    scroll_editor_to(page, text.splitlines().index("    value: 16") + 1)
    page.locator("#draft-editor .cm-line", has_text="value: 16").wait_for()  # in the editor too
    page.locator("#editor-status", has_text="No problems in the text").wait_for(timeout=10000)  # checked, no reload
    assert page.locator("#save-version").input_value() == "1.2.0"
    page.click("#save-button")
    page.locator("#saved-draft").wait_for()
    assert "Saved as draft hetrombopag@1.2.0" in page.locator("#saved-draft").inner_text()
    assert "version: 1.2.0" in page.locator("#draft-text").input_value()
    shot(page, "amend-saved")
    page.goto(server.base_url + "/workbench/")
    row = page.locator("tr.saved-draft[data-ruleset='hetrombopag'][data-version='1.2.0']")
    assert "draft (saved)" in row.inner_text() and "never served" in row.inner_text()
    row.locator("a", has_text="open in check").click()
    assert "value: 16" in page.locator("#draft-text").input_value()
    assert page.errors == []


def test_a_posted_drafts_problems_are_marked_in_the_editor_as_it_opens(page, server):
    page.goto(server.base_url + "/workbench/check?from=hetrombopag@1.1.0")
    text = page.locator("#draft-text").input_value().replace("    value: 18\n", "    value: eighteen\n", 1)
    page.locator("#draft-text").evaluate("(area, text) => { area.value = text; }", text)
    page.click("#check-button")
    assert "problem" in page.locator("#verdict").inner_text()
    scroll_editor_to(page, text.splitlines().index("    value: eighteen") + 1)
    marked = page.locator("#draft-editor .cm-line", has_text="value: eighteen").locator(".cm-lintRange-error")
    marked.wait_for(timeout=5000)  # without a keystroke
    assert page.locator("#editor-status").inner_text() == ""  # no check was asked for: the page's own problems
