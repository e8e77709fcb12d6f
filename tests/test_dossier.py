"""The release dossier: its data (engine.dossier), its HTML and PDF, the workbench pages and `cdsrules dossier`."""
from __future__ import annotations

import datetime as dt
import html
import http.server
import re
import shutil
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
import yaml
from flask import Flask

from engine import versions
from engine.dossier import dossier_from_files, previous_version, release_record
from engine.evidence import uncited_rules
from engine.loader import load_ruleset
from tests.conftest import RULES_DIR
from webhook.workbench import register_workbench
from webhook.workbench.dossier_render import dossier_html, dossier_pdf

CLI = Path(sys.executable).parent / "cdsrules"
ON = dt.date(2026, 12, 4)
AMENDMENT = load_ruleset(RULES_DIR / "hetrombopag" / "1.1.0.yaml")


@pytest.fixture(scope="module")
def dossier():
    return dossier_from_files(RULES_DIR, "hetrombopag", "1.1.0", ON)


@pytest.fixture(scope="module")
def page(dossier) -> str:
    return dossier_html(dossier)


def section(page: str, anchor: str) -> str:
    """The text of one section of the document, from its heading to the next."""
    start = page.index(f'<h2 id="{anchor}">')
    end = page.find("<h2 ", start + 1)
    return html.unescape(page[start:end if end > 0 else len(page)])


def pdf_text(pdf: bytes) -> str:
    """The strings a PDF holds in its objects (bookmarks, metadata), its compressed object streams inflated: the
    headings weasyprint writes as the outline."""
    inflated = []
    for start in re.finditer(rb"stream\r?\n", pdf):
        try:
            inflated.append(zlib.decompressobj().decompress(pdf[start.end():]))
        except zlib.error:
            continue
    data = b"\n".join([pdf, *inflated])
    texts = [bytes.fromhex(h.decode()).decode("utf-16-be")
             for h in re.findall(rb"<[Ff][Ee][Ff][Ff]([0-9A-Fa-f]+)>", data)]
    texts += [t.decode("latin-1").replace("\\(", "(").replace("\\)", ")")
              for t in re.findall(rb"\(((?:[^()\\]|\\.)*)\)", data)]
    return "\n".join(texts)


# --- the document -------------------------------------------------------------------------------


def test_each_rule_is_listed_with_its_explanation_and_cited_clauses(page):
    rules = section(page, "rules")
    for rule in AMENDMENT.rules:
        assert f'id="rule-{rule.id}"' in page
        assert rule.explanation.split("\n")[0][:60] in rules
    start = page[page.index('id="rule-start-dose"'):page.index('id="rule-start-dose-card"')]
    assert "Start dose by body weight" in html.unescape(start)
    assert "starting at 5mg/d for body weight&gt;20kg" in start  # the registry's words, quoted


def test_the_rules_citing_no_clause_are_listed(page):
    uncited = section(page, "uncited")
    expected = [rule.id for rule in uncited_rules(AMENDMENT)]
    assert expected and f"({len(expected)})" in uncited
    for rule_id in expected:
        assert f"<code>{rule_id}</code>" in uncited
    assert "<code>start-dose</code>" not in uncited


def test_source_release_evidence_open_parameters_and_tests(dossier, page):
    assert "NCT06818916" in section(page, "source") and "hetrombopag 1.1.0" in section(page, "source")
    release = section(page, "release")
    assert "draft" in release and dossier.record.file_sha256 in release
    evidence = section(page, "evidence")
    assert "Funding source" in evidence and "Review by" in evidence and "2027-07-31" in evidence
    pending = [p.name for p in AMENDMENT.parameters.values() if "pending" in p.source]
    assert pending and all(name in section(page, "parameters") for name in pending)
    assert f"Tests: {len(AMENDMENT.tests)} of {len(AMENDMENT.tests)} passed" in section(page, "tests")


def test_the_coverage_of_the_tests_is_shown_against_the_threshold(dossier, page):
    coverage = section(page, "coverage")
    rules, total = dossier.coverage.counts()["rules"]
    assert "threshold met" in coverage and f"{rules}/{total}" in coverage and rules == total
    assert "rules 100%, table rows 100%" in coverage


def test_coverage_below_the_threshold_names_what_is_uncovered(tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    tests_file = rules / "hetrombopag" / "1.1.0.tests.yaml"
    tests_file.unlink()  # the cases that reach the rules the file's own tests do not
    dossier = dossier_from_files(rules, "hetrombopag", "1.1.0", ON, with_cohort=False)
    assert dossier.below and dossier.coverage.uncovered_rules
    coverage = section(dossier_html(dossier), "coverage")
    assert "below the threshold" in coverage
    assert all(rule_id in coverage for rule_id in dossier.coverage.uncovered_rules)


def test_the_impact_against_the_previous_version_is_measured_on_tests_and_cohort(dossier, page):
    impact = section(page, "impact")
    assert dossier.impact is not None and dossier.impact.previous == "1.0.1"
    assert "1.0.1 → 1.1.0" in impact and "synthetic cohort of" in impact
    assert "platelets 49 at review" in impact
    assert "table titration_action_by_platelets rows changed" in impact


def test_a_released_version_shows_its_release_record_and_hash():
    found = dossier_from_files(RULES_DIR, "hetrombopag", "1.0.1", ON, with_cohort=False)
    release = section(dossier_html(found), "release")
    recorded = versions.read_manifest(RULES_DIR / "hetrombopag")["1.0.1"]
    assert recorded.sha256 in release and "matches the record" in release
    assert recorded.approved_by.split(":")[0] in release and "2026-12-02" in release
    assert found.impact is not None and "tests" in found.impact.measured_on and "only" in found.impact.measured_on


def test_fields_a_manifest_entry_gains_are_shown(tmp_path):
    folder = tmp_path / "hetrombopag"
    shutil.copytree(RULES_DIR / "hetrombopag", folder)
    manifest = yaml.safe_load((folder / versions.MANIFEST).read_text(encoding="utf-8"))
    manifest["releases"][0].update(proposer="Clinical pharmacy", approvals=["Haematology", "Pharmacy board"])
    (folder / versions.MANIFEST).write_text(yaml.safe_dump(manifest, allow_unicode=True), encoding="utf-8")
    record = release_record(folder / "1.0.0.yaml", versions.Release("1.0.0", "0" * 64, ON, "board", "now"))
    assert record.more == {"proposer": "Clinical pharmacy", "approvals": ["Haematology", "Pharmacy board"]}
    assert record.hash_ok is False


def test_the_previous_version_is_the_greatest_below():
    assert previous_version(["1.0.0", "1.0.1", "1.1.0", "2.0.0"], "1.1.0") == "1.0.1"
    assert previous_version(["1.0.0", "1.1.0"], "1.0.0") is None


def test_the_pdf_is_rendered_from_the_same_html_and_holds_the_versions_text(page):
    pdf = dossier_pdf(page)
    assert pdf.startswith(b"%PDF-") and len(pdf) > 20_000
    text = pdf_text(pdf)
    assert "Release dossier: hetrombopag 1.1.0" in text
    for rule in AMENDMENT.rules:  # every rule's heading is a bookmark
        assert rule.id in text
    assert f"Rules citing no clause ({len(uncited_rules(AMENDMENT))})" in text


def test_rendering_fetches_nothing():
    """An address in the document is refused, not fetched: a loopback server it points at hears nothing."""
    asked: list[str] = []

    class Listener(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the standard library's name)
            asked.append(self.path)
            self.send_response(404)
            self.end_headers()

    server = http.server.HTTPServer(("127.0.0.1", 0), Listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"http://127.0.0.1:{server.server_port}"
        pdf = dossier_pdf(f'<html><head><link rel="stylesheet" href="{address}/s.css"></head>'
                          f'<body><h1>offline</h1><img src="{address}/x.png"></body></html>')
    finally:
        server.shutdown()
        server.server_close()
    assert pdf.startswith(b"%PDF-") and "offline" in pdf_text(pdf)
    assert asked == []


# --- the workbench --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    directory = tmp_path_factory.mktemp("dossier")
    app = Flask(__name__)
    register_workbench(app, {"RULES_DIR": str(RULES_DIR), "DB_URL": f"sqlite:///{directory / 'wb.db'}",
                             "CLOCK": lambda: ON})
    return app.test_client()


def test_the_version_page_shows_the_attributes_and_leads_to_the_dossier(client):
    page = client.get("/workbench/rulesets/hetrombopag/1.1.0").get_data(as_text=True)
    assert 'href="/workbench/rulesets/hetrombopag/1.1.0/dossier"' in page
    assert "Funding source" in page and "2027-07-31" in page
    assert 'id="clause-start-dose"' in page and 'href="#clause-start-dose"' in page
    assert "not set" in client.get("/workbench/rulesets/hetrombopag/1.0.1").get_data(as_text=True)


def test_the_dossier_page_and_its_pdf(client):
    response = client.get("/workbench/rulesets/hetrombopag/1.1.0/dossier")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    nonce = re.search(r'<style nonce="([^"]+)">', page).group(1)
    assert f"'nonce-{nonce}'" in response.headers["Content-Security-Policy"]
    assert all(f'id="rule-{rule.id}"' in page for rule in AMENDMENT.rules)
    assert 'href="/workbench/rulesets/hetrombopag/1.1.0/dossier.pdf"' in page
    pdf = client.get("/workbench/rulesets/hetrombopag/1.1.0/dossier.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF-")
    assert "Release dossier: hetrombopag 1.1.0" in pdf_text(pdf.data)
    assert client.get("/workbench/rulesets/hetrombopag/9.9.9/dossier").status_code == 404


# --- the command line ---------------------------------------------------------------------------------


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=120,
                          cwd=RULES_DIR.parent)


def test_the_command_writes_html_and_pdf(tmp_path):
    out = tmp_path / "dossier.html"
    result = run("dossier", "hetrombopag", "1.1.0", "--out", out, "--tests-only")
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}: hetrombopag@1.1.0" in result.stdout and "tests" in result.stdout
    written = out.read_text(encoding="utf-8")
    assert all(f'id="rule-{rule.id}"' in written for rule in AMENDMENT.rules) and "only: no cohort" in written
    pdf = tmp_path / "dossier.pdf"
    assert run("dossier", "hetrombopag", "1.0.0", "--out", pdf).returncode == 0
    assert pdf.read_bytes().startswith(b"%PDF-") and "hetrombopag 1.0.0" in pdf_text(pdf.read_bytes())


def test_the_command_refuses_another_format_and_an_unknown_version(tmp_path):
    wrong = run("dossier", "hetrombopag", "1.1.0", "--out", tmp_path / "d.txt")
    assert wrong.returncode == 1 and ".pdf or .html" in wrong.stderr and "Traceback" not in wrong.stderr
    missing = run("dossier", "hetrombopag", "9.9.9", "--out", tmp_path / "d.pdf")
    assert missing.returncode == 1 and "no version 9.9.9" in missing.stderr
