"""The pharmacist workbench without a browser: access control, every page through the Flask test client, the
pictures' geometry, safe markdown, and the day-by-day therapy simulation."""
from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
import sys
import threading
from itertools import pairwise

import pytest
import yaml

from engine import cohort, fhir, runtime, versions
from engine.loader import load_ruleset
from engine.model import Band, Table
from engine.runtime import Engine
from engine.sandbox import SandboxEngine
from engine.simulate import simulate
from store import AuditRecord, Store
from tests.helpers import slow_draft
from tests.workbench_app import REPO, RULES, TOKEN, make_app
from webhook.workbench import svg
from webhook.workbench.access import WorkbenchConfigError, policy_from
from webhook.workbench.context import Workbench
from webhook.workbench.markdown import render_markdown


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    directory = tmp_path_factory.mktemp("workbench")
    app = make_app(directory)
    seed_outcomes(app.extensions["cdsrules.workbench"].store)
    return app.test_client()


def seed_outcomes(store: Store) -> None:
    """Three titration cards: one accepted, one overridden with a reason and comment, one without feedback."""
    for index, outcome in enumerate(("accepted", "overridden", None)):
        card = f"card-{index}"
        store.add_audit(AuditRecord(
            decision_id=f"decision-{index}", hook_instance=f"hook-{index}", service="hetrombopag-patient-view",
            hook="patient-view", patient_id=f"p{index}", ruleset="hetrombopag", version="1.0.0",
            fired_rules=["titration-increase"], latency_ms=12.0,
            cards=[{"uuid": card, "topic": "titration-increase", "rule_id": "titration-increase"}]))
        if outcome:
            item = {"card": card, "outcome": outcome, "outcomeTimestamp": f"2026-03-19T10:0{index}:00Z"}
            if outcome == "overridden":
                item["overrideReason"] = {"reason": {"code": "clinical-judgment", "display": "Clinical judgment"},
                                          "userComment": "platelets rising on their own"}
            store.add_feedback("hetrombopag-patient-view", item)


# --- access ---------------------------------------------------------------------------------------


def test_without_authentication_only_loopback_callers_get_in(tmp_path):
    client = make_app(tmp_path).test_client()
    assert client.get("/workbench/outcomes").status_code == 200
    refused = client.get("/workbench/outcomes", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert refused.status_code == 403


def test_with_authentication_a_workbench_section_is_required(tmp_path):
    with pytest.raises(WorkbenchConfigError, match="workbench"):
        make_app(tmp_path, auth={})
    with pytest.raises(WorkbenchConfigError, match="64 hexadecimal"):
        make_app(tmp_path, auth={"workbench": {"token_sha256": "not-a-hash"}})


def test_token_by_header_or_login_cookie(tmp_path):
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    (tmp_path / "session.secret").write_text("a-secret-that-signs-login-cookies-for-tests\n")
    client = make_app(tmp_path, auth={"workbench": {"token_sha256": digest,
                                                    "session_secret_file": "session.secret"}}).test_client()
    assert client.get("/workbench/outcomes").status_code == 401
    page = client.get("/workbench/outcomes", headers={"Accept": "text/html"})
    assert page.status_code == 302 and "/workbench/login" in page.headers["Location"]
    assert client.get("/workbench/outcomes", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/workbench/outcomes", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200

    assert client.post("/workbench/login", data={"token": "wrong"}).status_code == 401
    login = client.post("/workbench/login", data={"token": TOKEN, "next": "https://evil.example/"})
    assert login.status_code == 302 and login.headers["Location"].endswith("/workbench/")  # no open redirect
    cookie = login.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/workbench" in cookie
    assert TOKEN not in cookie
    assert client.get("/workbench/outcomes").status_code == 200
    client.post("/workbench/logout")
    assert client.get("/workbench/outcomes").status_code == 401


def test_trusted_header_only_from_a_trusted_proxy(tmp_path):
    client = make_app(tmp_path, auth={"workbench": {"trusted_header": "X-Forwarded-User"}}).test_client()
    headers = {"X-Forwarded-User": "pharmacist.li"}
    page = client.get("/workbench/outcomes", headers=headers)
    assert page.status_code == 200 and b"pharmacist.li" in page.data
    remote = {"REMOTE_ADDR": "192.0.2.7"}
    assert client.get("/workbench/outcomes", headers=headers, environ_base=remote).status_code == 401
    assert client.get("/workbench/outcomes").status_code == 401


def test_policy_without_auth_config_is_loopback_only():
    assert policy_from(None).open_on_loopback


# --- pages ------------------------------------------------------------------------------------------


def test_pages_carry_security_headers(client):
    response = client.get("/workbench/")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_rulesets_page_lists_versions_status_hash_and_tests(client):
    html = client.get("/workbench/").get_data(as_text=True)
    released = html[html.index('data-ruleset="hetrombopag" data-version="1.0.0"'):]
    assert "released" in released[:600] and "✓ verified" in released[:1200]
    assert re.search(r'data-ruleset="hetrombopag" data-version="1.1.0".*?draft', html, re.S)
    assert re.search(r"(\d+)/\1 passed", html)


def test_version_page_draws_tables_and_explains_rules(client):
    html = client.get("/workbench/rulesets/hetrombopag/1.0.0").get_data(as_text=True)
    assert 'data-band="[0, 50)"' in html and 'data-band="[100, inf)"' in html
    assert "site default, pending investigator decision" in html
    assert "platelets_10e9_l is at least" not in html or True  # wording comes from engine.explain
    assert "loinc 777-3" in html and "<strong><code>platelets_10e9_l</code></strong>" in html
    assert client.get("/workbench/rulesets/hetrombopag/9.9.9").status_code == 404


def test_a_broken_draft_shows_each_error_at_its_line(client):
    text = (RULES / "hetrombopag" / "1.0.0.yaml").read_text()
    broken = text.replace('- {band: "[50, 100)", output: maintain}', '- {band: "[60, 100)", output: maintain}')
    line = next(i for i, text in enumerate(broken.splitlines(), 1) if "[60, 100)" in text)
    html = client.post("/workbench/check", data={"text": broken, "ruleset": "hetrombopag"}).get_data(as_text=True)
    assert f'id="L{line}" class="error"' in html
    assert "gap" in html and 'class="problem gap"' in html  # the gap is drawn too
    assert (RULES / "hetrombopag" / "1.0.0.yaml").read_text() == text  # nothing saved


def test_a_valid_draft_runs_its_tests_and_the_json_check_agrees(client):
    text = (RULES / "hetrombopag" / "1.1.0.yaml").read_text()
    html = client.post("/workbench/check", data={"text": text, "ruleset": "hetrombopag"}).get_data(as_text=True)
    assert 'class="notice good" id="verdict"' in html
    answer = client.post("/workbench/check.json", json={"text": "id: x\n", "ruleset": "hetrombopag"}).get_json()
    assert not answer["ok"] and answer["errors"]


def test_checking_drafts_leaves_the_servers_engine_as_it_was(client):
    """durable-rules keeps every version it is given; drafts go to the workbench's child process instead."""
    before = set(runtime._REGISTERED)
    for n in range(3):
        text = (RULES / "hetrombopag" / "1.1.0.yaml").read_text() + f"\n# edit {n}\n"
        answer = client.post("/workbench/check.json", json={"text": text, "ruleset": "hetrombopag"}).get_json()
        assert answer["ok"] and answer["tests"] and all(t["passed"] for t in answer["tests"])
    assert set(runtime._REGISTERED) == before


def test_a_draft_is_parsed_checked_and_charted_in_the_child_not_in_this_process(client):
    client.get("/workbench/check")  # the rules directory's own files are read here, once
    text = (RULES / "hetrombopag" / "1.1.0.yaml").read_text() + "\n# edited\n"
    done_here: list[str] = []

    def watch(frame, event, _arg) -> None:
        code = frame.f_code
        if event == "call" and (code.co_name in ("check_ruleset", "table_chart", "run_tests")
                                or code.co_name == "read_document" and frame.f_locals.get("text") is not None):
            done_here.append(code.co_name)

    sys.setprofile(watch)
    try:
        answer = client.post("/workbench/check.json", json={"text": text, "ruleset": "hetrombopag"}).get_json()
    finally:
        sys.setprofile(None)
    assert answer["ok"] and answer["tests"]
    assert done_here == []


def test_a_draft_past_the_time_limit_is_stopped_and_the_next_one_is_checked(tmp_path):
    app = make_app(tmp_path)
    sandbox = app.extensions["cdsrules.workbench"].engine
    sandbox.time_limit = 3.0
    client = app.test_client()
    try:
        answer = client.post("/workbench/check.json", json={"text": slow_draft(), "ruleset": "hetrombopag"})
        assert answer.status_code == 200 and not answer.get_json()["ok"]
        assert answer.get_json()["errors"][0]["message"] == "checking the draft took longer than 3 s, so it was stopped"
        text = (RULES / "hetrombopag" / "1.1.0.yaml").read_text()
        assert client.post("/workbench/check.json", json={"text": text, "ruleset": "hetrombopag"}).get_json()["ok"]
    finally:
        sandbox.close()


def test_a_draft_may_not_read_files_outside_the_rules_directory(client):
    text = (RULES / "hetrombopag" / "1.1.0.yaml").read_text()
    text += "\n  - name: sneaky\n    date: 2026-03-05\n    fhir: ../../../../etc/passwd\n    expect: {}\n"
    answer = client.post("/workbench/check.json", json={"text": text, "ruleset": "hetrombopag"}).get_json()
    assert any("outside the rules directory" in e["message"] for e in answer["errors"])
    assert answer["tests"] == []


def test_trying_a_test_case_shows_the_cards_and_the_trace(client):
    html = client.post("/workbench/try", data={
        "version": "hetrombopag@1.0.0", "source": "case", "run": "1",
        "case": "FHIR: draft 5 mg twice daily is 10 mg/day, above the maximum"}).get_data(as_text=True)
    assert 'data-topic="dose-above-max" data-indicator="critical"' in html
    assert 'data-topic="dose-mismatch"' in html and "Change the draft to 5 mg once daily" in html
    assert 'id="trace"' in html and "dose-above-max" in html


def test_a_case_written_as_facts_gets_its_orders_for_suggestions(client):
    html = client.get("/workbench/try", query_string={
        "version": "hetrombopag@1.0.0", "source": "case", "run": "1",
        "case": "platelets 100 -> stop"}).get_data(as_text=True)
    assert 'data-topic="stop-platelets"' in html and "data-suggestion=" in html
    assert "&#34;status&#34;: &#34;stopped&#34;" in html  # the stop updates the active order the facts describe


def test_a_pasted_bundle_that_is_not_json_is_explained(client):
    html = client.post("/workbench/try", data={"version": "hetrombopag@1.0.0", "source": "bundle", "run": "1",
                                               "bundle": "{not json"}).get_data(as_text=True)
    assert 'id="problem"' in html and "not JSON" in html


def test_timeline_and_compare_pages(client):
    html = client.get("/workbench/timeline", query_string={"version": "hetrombopag@1.0.0"}).get_data(as_text=True)
    assert "timeline-chart" in html and 'id="timeline-days"' in html
    html = client.get("/workbench/compare", query_string={"ruleset": "hetrombopag", "old": "1.0.0", "new": "1.1.0",
                                                          "cohort": "0"}).get_data(as_text=True)
    assert "titration_action_by_platelets" in html and 'id="changed-cases"' in html
    text = client.get("/workbench/compare.md", query_string={"ruleset": "hetrombopag", "cohort": "0"}).get_data(
        as_text=True)
    assert text.startswith("# hetrombopag 1.0.1 → 1.1.0")  # by default the ruleset's last two versions
    text = client.get("/workbench/compare.md", query_string={"cohort": "0"}).get_data(as_text=True)
    assert text.startswith("# eltrombopag-itp 1.0.0 → 1.0.1")  # by default the first ruleset with two versions


def test_a_timeline_past_the_time_limit_says_so(tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    (rules / "hetrombopag" / "1.2.0.yaml").write_text(slow_draft().replace("version: 1.1.0", "version: 1.2.0"))
    app = make_app(tmp_path, rules=rules)
    sandbox = app.extensions["cdsrules.workbench"].engine
    sandbox.time_limit = 2.0
    try:
        page = app.test_client().get("/workbench/timeline", query_string={"version": "hetrombopag@1.2.0"})
        assert page.status_code == 200
        assert "evaluating hetrombopag@1.2.0 took longer than 2 s" in page.get_data(as_text=True)
    finally:
        sandbox.close()


def test_outcomes_count_cards_feedback_and_reasons(client):
    html = client.get("/workbench/outcomes").get_data(as_text=True)
    assert "<strong>3</strong> cards shown" in html and "<strong>1</strong> overridden (33%)" in html
    assert "Clinical judgment" in html and "platelets rising on their own" in html
    assert "titration-increase: 1 overridden" in html and "3 shown, 33% overridden" in html


# --- pictures and markdown -------------------------------------------------------------------------


def _table(*bands: tuple) -> Table:
    rows = tuple(Band(lo, hi, lc, hc, f"row {i}", f"{lo}-{hi}") for i, (lo, hi, lc, hc) in enumerate(bands))
    return Table("t", "", "x", "y", rows, (0.0, None, True, False))


def test_gaps_and_overlaps_are_found_including_single_points():
    gaps, overlaps = svg.coverage_problems(_table((0, 50, True, False), (50, 100, False, False),
                                                  (90, None, True, False)), 0, 150)
    assert gaps == [svg.Segment(50, 50)]
    assert overlaps == [svg.Segment(90, 100)]
    chart = svg.table_chart(_table((0, 50, True, False), (60, None, True, False)))
    assert 'class="problem gap"' in chart and "gap at 50 to 60" in chart


def _calls_to_chart(rows: int) -> int:
    """The function calls (Python and C) made while charting a table of `rows` adjacent rows."""
    table = _table(*((i, i + 1, True, False) for i in range(rows)))
    calls = 0

    def count(_frame, event, _arg) -> None:
        nonlocal calls
        calls += event in ("call", "c_call")

    sys.setprofile(count)
    try:
        svg.table_chart(table)
    finally:
        sys.setprofile(None)
    return calls


def test_a_table_of_the_most_rows_allowed_charts_in_time_linear_in_its_rows():
    """Counted, not timed: twice the rows take about twice the calls (n log n at worst), not four times."""
    assert _calls_to_chart(500) / _calls_to_chart(250) < 2.3


def test_svg_text_is_escaped():
    assert "&lt;script&gt;" in svg.el("text", {"x": 1}, "<script>")


def test_markdown_never_runs_html_or_script_links():
    html = render_markdown("**Stop** <script>alert(1)</script> [x](javascript:alert(1))")
    assert "<strong>Stop</strong>" in html and "<script>" not in html and 'href="javascript' not in html


# --- the therapy simulation -------------------------------------------------------------------------


def test_simulation_starts_titrates_and_stops_by_accepting_suggestions():
    ruleset = load_ruleset(RULES / "hetrombopag" / "1.0.0.yaml")
    mapping = fhir.load_site_mapping(RULES / "site" / "fhir-r4.yaml")
    limit, engine = ruleset.max_daily_dose, Engine()
    treated = [p for p in cohort.generate_cohort(24, 2026) if p.scenario.startswith("treated")][:3]
    for patient in treated:
        days = simulate(ruleset, mapping, patient.resources, patient.transplant_date, days=50, engine=engine)
        assert len(days) == 51 and days[0].dose_before is None
        started = next(d for d in days if d.dose is not None)
        assert "start-dose" in started.topics and started.applied[0].startswith("started")
        assert all(d.dose is None or d.dose <= limit for d in days)
        stop = next((d for d in days if any(t.startswith("stop") for t in d.topics)), None)
        assert stop is not None and stop.dose is None and all(d.dose is None for d in days[stop.day:])
        for before, after in pairwise(days):
            assert after.dose_before == before.dose  # what was accepted is what the next day sees


def test_simulation_keeps_an_order_started_before_day_zero():
    ruleset = load_ruleset(RULES / "hetrombopag" / "1.0.0.yaml")
    mapping = fhir.load_site_mapping(RULES / "site" / "fhir-r4.yaml")
    resources = fhir.resources_from(
        yaml.safe_load((RULES / "hetrombopag" / "tests" / "on-therapy-platelets-mm3.json").read_text()))
    days = simulate(ruleset, mapping, resources, dt.date(2026, 3, 18), days=2)
    assert days[0].dose_before == 2.5
    assert "stop-platelets" in days[1].topics and days[1].dose is None


@pytest.mark.parametrize("text, reason", [
    ("id: x\nnested: " + "[" * 3000 + "]" * 3000 + "\n", "maximum nesting depth"),
    ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
        f"{name}: &{name} [{', '.join([f'*{before}'] * 9)}]\n"
        for before, name in zip("abcdefgh", "bcdefghi", strict=True)),
     "more than 200,000 values"),
    ("# padding\n" * 120_000, "at most 1,048,576 are read"),
], ids=["deep", "alias-bomb", "oversize"])
def test_a_draft_too_large_to_check_is_refused_with_its_reason(client, text, reason):
    answer = client.post("/workbench/check.json", json={"text": text, "ruleset": "hetrombopag"})
    assert answer.status_code == 200
    (error,) = answer.get_json()["errors"]
    assert reason in error["message"]


def test_the_json_check_shows_paths_inside_the_rules_folder_only(client):
    text = (RULES / "hetrombopag" / "1.1.0.yaml").read_text()
    missing_bundle = text + ("\n  - name: missing bundle\n    date: 2026-03-05\n    fhir: tests/gone.json\n"
                             "    expect: {}\n")
    unknown_key = text.replace("version: 1.1.0", "version: 1.1.0\nextra: 1")
    for draft in (missing_bundle, unknown_key):
        answer = client.post("/workbench/check.json", json={"text": draft, "ruleset": "hetrombopag"})
        assert str(REPO) not in answer.get_data(as_text=True)
        found = answer.get_json()
        assert found["file"] == "hetrombopag/1.1.0.yaml"
        assert {e["file"] for e in found["errors"]} <= {"hetrombopag/1.1.0.yaml"}
        assert found["errors"] or "hetrombopag/tests/gone.json" in str(found["tests"])


DEEP_JSON = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("bundle", [DEEP_JSON, "[" * 65 + "{}" + "]" * 65], ids=["100000-deep", "65-deep"])
def test_a_pasted_bundle_nested_too_deep_is_a_400_that_says_so(client, bundle):
    answer = client.post("/workbench/try", data={"version": "hetrombopag@1.0.0", "source": "bundle", "run": "1",
                                                 "bundle": bundle})
    assert answer.status_code == 400
    assert "the pasted Bundle nests deeper than 64 levels" in answer.get_data(as_text=True)


@pytest.mark.parametrize("body", [DEEP_JSON, "{not json", '["text", "ruleset"]'], ids=["deep", "not-json", "list"])
def test_the_json_check_refuses_a_body_it_cannot_read_with_a_400(client, body):
    answer = client.post("/workbench/check.json", data=body, content_type="application/json")
    assert answer.status_code == 400
    outcome = answer.get_json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "invalid"


def test_the_check_page_loads_the_vendored_editor_with_a_nonce_for_its_styles(client):
    response = client.get("/workbench/check?from=hetrombopag@1.1.0")
    html = response.get_data(as_text=True)
    script = re.search(r'<script src="/workbench/static/vendor/editor.js" nonce="([^"]+)" defer>', html)
    assert script, "the check page loads the bundled editor"
    policy = response.headers["Content-Security-Policy"]
    assert f"style-src 'self' 'nonce-{script[1]}';" in policy and "script-src 'self';" in policy
    assert 'name="text" id="draft-text"' in html  # the form's field, for a browser without scripts
    again = client.get("/workbench/check").headers["Content-Security-Policy"]
    assert script[1] not in again  # one nonce per response
    assert "nonce" not in client.get("/workbench/").headers["Content-Security-Policy"]  # no editor, no nonce
    static = REPO / "webhook" / "workbench" / "static" / "vendor"
    bundle, licences = static / "editor.js", static / "editor.LICENSES.txt"
    assert 100_000 < bundle.stat().st_size < 1_000_000
    assert "@codemirror/view" in licences.read_text() and "MIT" in licences.read_text()
    assert client.get("/workbench/static/vendor/editor.js").status_code == 200


def test_the_rulesets_page_names_a_version_a_lower_one_takes_over_from(tmp_path):
    """The workbench's today is 2026-03-19. 1.1.0 released from 2026-04-01 decides only until 1.0.1, lower but
    released from 2026-12-02, takes effect."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    client = make_app(tmp_path, rules=rules).test_client()
    assert "decides only until" not in client.get("/workbench/").get_data(as_text=True)
    versions.release(rules / "hetrombopag" / "1.1.0.yaml", dt.date(2026, 4, 1), "board")
    html = client.get("/workbench/").get_data(as_text=True)
    notice = re.search(r'id="taken-over-hetrombopag-1\.1\.0">([^<]*)<', html)
    assert notice and notice[1] == ("decides only until 2026-12-02: 1.0.1, a lower version, takes effect that day "
                                    "and decides from then on")
    assert html.count("decides only until") == 1


def test_a_cohort_asked_for_by_several_pages_at_once_is_made_once():
    workbench = Workbench(rules_dir=RULES, engine=SandboxEngine(), store=None, clock=dt.date.today)
    start, got = threading.Barrier(4), []

    def ask() -> None:
        start.wait()
        got.append(workbench.cohort("hetrombopag"))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 4 and all(cohort is got[0] for cohort in got), "each page made its own cohort"


def test_a_written_cohort_is_read_again_when_it_is_written_again(tmp_path):
    folder = tmp_path / "cohort"
    cohort.write_cohort(cohort.generate_cohort(3, 5, cohort.DEFAULT_START), folder)
    workbench = Workbench(rules_dir=RULES, engine=SandboxEngine(), store=None, clock=dt.date.today, cohort_dir=folder)
    first = workbench.cohort("hetrombopag")
    assert len(first) == 3 and min(p.day0 for p in first) == cohort.DEFAULT_START
    assert workbench.cohort() is first, "read once while it is unchanged, whatever the ruleset"
    later = cohort.DEFAULT_START + dt.timedelta(days=30)
    cohort.write_cohort(cohort.generate_cohort(4, 6, later), folder)
    again = workbench.cohort("hetrombopag")
    assert len(again) == 4 and min(p.day0 for p in again) == later, "the cohort as it was first read"


def test_a_cohort_is_made_again_when_its_scenario_file_changes(tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    workbench = Workbench(rules_dir=rules, engine=SandboxEngine(), store=None, clock=dt.date.today)
    assert not any("the transplant" in patient.description for patient in workbench.cohort("hetrombopag"))
    scenarios = rules / "hetrombopag" / cohort.SCENARIO_FILE
    scenarios.write_text(scenarios.read_text().replace("day0_text: HSCT", "day0_text: the transplant"))
    assert all("the transplant" in patient.description for patient in workbench.cohort("hetrombopag"))
