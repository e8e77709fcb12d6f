"""The amendment path in the workbench, joined: a draft saved in the store is proposed with whom it applies to, its
review shows what its tests cover against the ruleset's threshold and whom each choice changes, and the release
writes the frozen bytes with their terms; through the real Flask app and store (SQLite and PostgreSQL).

The refusals tests/test_four_eyes.py already makes (self-approval, an approval of other bytes, `cdsrules release`
of a governed ruleset without approvals) are not repeated here."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cdsrules.cli import main
from engine import versions
from store import Store
from tests.workbench_app import bearer, governed_copy, users_app

AMENDED = "1.2.0"


@pytest.fixture
def rules(tmp_path) -> Path:
    return governed_copy(tmp_path, 1)


def with_tests_file(rules: Path) -> None:
    """The amended version's missing cases, beside it and outside its hash, as its author adds them."""
    folder = rules / "hetrombopag"
    shutil.copyfile(folder / "1.1.0.tests.yaml", folder / f"{AMENDED}.tests.yaml")


def amended_text(rules: Path, marker: str = "", therapy_start: str | None = "therapy_start_date") -> str:
    """1.1.0's text, naming the fact that says when a therapy started (so it may apply to new therapies only)."""
    text = (rules / "hetrombopag" / "1.1.0.yaml").read_text()
    if therapy_start:
        text = text.replace("\nparameters:\n", f"\ntherapy_start: {therapy_start}\n\nparameters:\n", 1)
    return text + (f"\n# {marker}\n" if marker else "")


def save(client, text: str) -> None:
    saved = client.post("/workbench/drafts/save", headers=bearer("ana"),
                        data={"text": text, "ruleset": "hetrombopag", "save_version": AMENDED})
    assert saved.status_code == 303, saved.get_data(as_text=True)


def saved_draft(store_url: str):
    draft = Store(store_url).draft("hetrombopag", AMENDED)
    assert draft is not None
    return draft


def propose_saved(client, draft, **terms):
    form = {"draft": draft.ref, "sha256": draft.text_sha256, "effective_from": "2026-05-01", "note": "Amendment 2",
            "applies_to": "all", **terms}
    return client.post("/workbench/drafts/propose", data=form, headers=bearer("ana"))


def approve(client, proposal, who: str = "ben"):
    return client.post(f"/workbench/proposals/{proposal.id}/review", headers=bearer(who),
                       data={"decision": "approve", "sha256": proposal.sha256, "comment": "as amendment 2 says"})


def test_a_saved_draft_is_proposed_and_its_release_writes_the_frozen_bytes_not_a_later_save(
        tmp_path, rules, store_url):
    with_tests_file(rules)
    client = users_app(tmp_path, rules, store_url).test_client()
    save(client, amended_text(rules))
    draft = saved_draft(store_url)
    page = client.get("/workbench/check", query_string={"draft": draft.ref}, headers=bearer("ana"))
    assert 'id="propose-saved-form"' in page.get_data(as_text=True), "the saved draft's page offers proposing it"
    listing = client.get("/workbench/", headers=bearer("ana")).get_data(as_text=True)
    assert f'id="propose-hetrombopag-{AMENDED.replace(".", "-")}-form"' in listing, "and so does its row"
    assert 'propose-saved-form' not in client.get("/workbench/check", query_string={"draft": draft.ref},
                                                  headers=bearer("ben")).get_data(as_text=True), \
        "not to a user without the author role"

    proposed = propose_saved(client, draft, applies_to="new-therapies")
    assert proposed.status_code == 303, proposed.get_data(as_text=True)
    proposal = Store(store_url).proposals.listing()[0]
    assert (proposal.sha256, proposal.applies_to, proposal.proposed_by) == (draft.text_sha256, "new-therapies", "ana")

    save(client, amended_text(rules, "reworded after proposing"))  # a later revision of the same draft
    assert saved_draft(store_url).revision == 2
    assert Store(store_url).proposals.get(proposal.id).sha256 == draft.text_sha256, "the proposal keeps its bytes"
    stale = propose_saved(client, draft)
    assert stale.status_code == 409 and "was saved again (revision 2)" in stale.get_data(as_text=True)

    review = client.get(f"/workbench/proposals/{proposal.id}", headers=bearer("ben")).get_data(as_text=True)
    assert "new therapies only" in review and 'id="choice-new-therapies" class="chosen"' in review
    assert "threshold met" in review and 'id="approval-refused"' not in review
    listing = client.get("/workbench/proposals", headers=bearer("ben")).get_data(as_text=True)
    assert f"{proposal.ruleset}@{proposal.version}" in listing and "new therapies only" in listing
    dossier = client.get(f"/workbench/proposals/{proposal.id}/dossier", headers=bearer("ben"))
    text = dossier.get_data(as_text=True)
    assert dossier.status_code == 200 and AMENDED in text and "Proposed by" in text
    assert draft.text_sha256 in text and "a draft, not in the manifest" in text and "new therapies only" in text
    pdf = client.get(f"/workbench/proposals/{proposal.id}/dossier.pdf", headers=bearer("ben"))
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF-")
    assert approve(client, proposal).status_code == 302
    folder = rules / "hetrombopag"
    assert (folder / f"{AMENDED}.yaml").read_text() == draft.text, "the frozen bytes, not the later revision"
    entry = yaml.safe_load((folder / versions.MANIFEST).read_text())["releases"][-1]
    assert (entry["version"], entry["sha256"], entry["applies_to"], entry["proposed_by"]) == (
        AMENDED, draft.text_sha256, "new-therapies", "ana")
    assert entry["effective_from"] == "2026-05-01" and entry["approvals"][0]["approver"] == "ben"
    released = client.get(f"/workbench/proposals/{proposal.id}", headers=bearer("ben")).get_data(as_text=True)
    assert f"/workbench/rulesets/hetrombopag/{AMENDED}/dossier" in released, "the released version's dossier"


def test_a_proposal_whose_tests_cover_less_than_the_threshold_cannot_be_approved_or_released(tmp_path, rules):
    client = users_app(tmp_path, rules, f"sqlite:///{tmp_path / 'wb.db'}").test_client()
    save(client, amended_text(rules))  # without its tests file: the inline tests leave rules unfired
    draft = Store(f"sqlite:///{tmp_path / 'wb.db'}").draft("hetrombopag", AMENDED)
    assert propose_saved(client, draft).status_code == 303
    store = Store(f"sqlite:///{tmp_path / 'wb.db'}")
    proposal = store.proposals.listing()[0]

    review = client.get(f"/workbench/proposals/{proposal.id}", headers=bearer("ben")).get_data(as_text=True)
    assert "below the threshold" in review and 'id="approval-refused"' in review
    assert "incomplete-age" in review, "the page names what is uncovered"
    refused = approve(client, proposal)
    page = refused.get_data(as_text=True)
    assert refused.status_code == 409 and "cover less than the ruleset" in page and "incomplete-age" in page
    assert store.proposals.get(proposal.id).reviews == (), "the refused approval is not recorded"
    assert store.proposals.get(proposal.id).status == "open"
    assert not (rules / "hetrombopag" / f"{AMENDED}.yaml").exists() and AMENDED not in versions.read_manifest(
        rules / "hetrombopag")
    rejected = client.post(f"/workbench/proposals/{proposal.id}/review", headers=bearer("ben"),
                           data={"decision": "reject", "sha256": proposal.sha256, "comment": "add the missing cases"})
    assert rejected.status_code == 302, "a rejection is still possible"
    assert store.proposals.get(proposal.id).status == "rejected"


def test_whom_a_release_applies_to_is_all_or_new_therapies_only(tmp_path, rules):
    client = users_app(tmp_path, rules, f"sqlite:///{tmp_path / 'wb.db'}").test_client()
    form = {"ruleset": "hetrombopag", "version": "1.1.0", "effective_from": "2026-05-01", "note": "",
            "applies_to": "some-patients", "text": amended_text(rules)}
    refused = client.post("/workbench/propose", data=form, headers=bearer("ana"))
    assert refused.status_code == 409 and "not &#39;some-patients&#39;" in refused.get_data(as_text=True)
    plain = {**form, "applies_to": "new-therapies", "text": amended_text(rules, therapy_start=None)}
    refused = client.post("/workbench/propose", data=plain, headers=bearer("ana"))
    assert refused.status_code == 409 and "names no therapy_start fact" in refused.get_data(as_text=True)
    assert Store(f"sqlite:///{tmp_path / 'wb.db'}").proposals.listing() == []


def approved_for_new_therapies(rules, store_url):
    """The amended version as a file, and a proposal of its bytes for new therapies only, approved by ben."""
    with_tests_file(rules)
    path = rules / "hetrombopag" / f"{AMENDED}.yaml"
    path.write_text(amended_text(rules).replace("version: 1.1.0", f"version: {AMENDED}", 1))
    store = Store(store_url)
    store.migrate()
    proposal = store.proposals.propose("hetrombopag", AMENDED, path.read_text(), "ana", "2026-05-01",
                                       applies_to="new-therapies")
    store.proposals.review(proposal.id, "ben", "approve", "", proposal.sha256)
    return path, store, proposal


def test_the_command_line_releases_whom_the_approved_proposal_applies_to(rules, store_url, capsys):
    path, store, proposal = approved_for_new_therapies(rules, store_url)
    release = ["release", str(path), "--db", store_url]
    other = Store(store_url).proposals.propose("hetrombopag", AMENDED, path.read_text(), "ana", "2026-05-01")
    assert other.id != proposal.id, "the same bytes on other terms are a new proposal"
    assert store.proposals.get(proposal.id).status == "superseded"

    store.proposals.review(other.id, "ben", "approve", "", other.sha256)
    assert main([*release, "--applies-to", "new-therapies"]) == 1
    assert "the approved proposal applies to all, not new-therapies" in capsys.readouterr().err
    assert main(release) == 0
    assert versions.read_manifest(rules / "hetrombopag")[AMENDED].applies_to == "all"


def test_the_command_line_records_new_therapies_only_from_the_proposal(rules, store_url, capsys):
    path, store, proposal = approved_for_new_therapies(rules, store_url)
    assert main(["release", str(path), "--db", store_url]) == 0, capsys.readouterr().err
    assert "for therapies started from then on" in capsys.readouterr().out
    assert versions.read_manifest(rules / "hetrombopag")[AMENDED].applies_to == "new-therapies"
