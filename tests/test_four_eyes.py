"""Four-eyes release of a ruleset version: who proposed, who approved exactly which bytes, nobody approving their
own proposal, and the release that follows; through the real store (SQLite and PostgreSQL), the real Flask app and
the command line."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from cdsrules.cli import main
from engine import runtime, versions
from engine.errors import RulesetErrors
from engine.governance import Approval
from store import Store
from store.proposals import ProposalRefused, text_sha256
from tests.helpers import demo_text, edited
from tests.workbench_app import (
    SECRET,
    SHARED,
    bearer,
    govern,
    governed_copy,
    make_app,
    sha256,
    token,
    users_app,
)
from webhook.workbench import access
from webhook.workbench.access import WorkbenchConfigError

D = dt.date.fromisoformat
def demo_version(folder: Path, version: str) -> Path:
    path = folder / f"{version}.yaml"
    path.write_text(edited(demo_text(), "version: 1.0.0", f"version: {version}"))
    return path


@pytest.fixture
def demo(tmp_path) -> Path:
    folder = tmp_path / "rules" / "demo-dosing"
    folder.mkdir(parents=True)
    return folder


# --- the rule, in the engine -----------------------------------------------------------------------


def test_a_governed_release_needs_approvals_by_others_than_its_proposer(demo):
    govern(demo, 1)
    path = demo_version(demo, "1.0.0")
    with pytest.raises(versions.ReleaseRefused, match="needs a proposal"):
        versions.release(path, D("2026-01-01"), "Board")
    with pytest.raises(versions.ReleaseRefused, match="ana proposed this release and may not approve it"):
        versions.release(path, D("2026-01-01"), "", proposed_by="ana",
                         approvals=(Approval("ana", "2026-01-01T00:00:00Z"),))
    entry = versions.release(path, D("2026-01-01"), "", proposed_by="ana",
                             approvals=(Approval("ben", "2026-01-02T09:00:00Z", "checked the table"),))
    assert entry.approved_by == "ben"
    manifest = yaml.safe_load((demo / versions.MANIFEST).read_text())
    assert manifest["governance"] == {"approvals_required": 1}, "releasing keeps the governance as written"
    assert manifest["releases"][0]["proposed_by"] == "ana"
    assert manifest["releases"][0]["approvals"] == [
        {"approver": "ben", "approved_at": "2026-01-02T09:00:00Z", "comment": "checked the table"}]
    assert versions.read_manifest(demo)["1.0.0"] == entry
    assert versions.load_catalog(demo.parent).select("demo-dosing", D("2026-02-01")).version == "1.0.0"


def test_one_approver_counts_once_and_retiring_keeps_the_record(demo):
    govern(demo, 2)
    path = demo_version(demo, "1.0.0")
    twice = (Approval("ben", "2026-01-02T09:00:00Z"), Approval("ben", "2026-01-02T09:05:00Z"))
    with pytest.raises(versions.ReleaseRefused, match="needs 2 approval"):
        versions.release(path, D("2026-01-01"), "", proposed_by="ana", approvals=twice)
    both = (Approval("ben", "2026-01-02T09:00:00Z"), Approval("cy", "2026-01-02T10:00:00Z"))
    versions.release(path, D("2026-01-01"), "", proposed_by="ana", approvals=both)
    retired = versions.retire(demo, "1.0.0", D("2026-06-30"))
    assert retired.approvals == both and retired.proposed_by == "ana" and retired.approved_by == "ben, cy"


def test_a_manifest_without_governance_releases_as_before_and_a_bad_one_is_refused(demo):
    entry = versions.release(demo_version(demo, "1.0.0"), D("2026-01-01"), "Board")
    assert entry.approved_by == "Board" and not entry.approvals
    assert "governance" not in yaml.safe_load((demo / versions.MANIFEST).read_text())
    govern(demo, 0)
    with pytest.raises(RulesetErrors, match="governance"):
        versions.read_manifest(demo)


# --- the record, in the store ----------------------------------------------------------------------


@pytest.fixture
def proposals(store_url):
    store = Store(store_url)
    store.migrate()
    return store.proposals


def test_nobody_reviews_their_own_proposal(proposals):
    proposal = proposals.propose("demo-dosing", "1.1.0", "text one", "ana", D("2026-04-01"), "amendment 1")
    assert (proposal.status, proposal.proposed_by, proposal.sha256) == ("open", "ana", text_sha256("text one"))
    with pytest.raises(ProposalRefused, match="may not review it"):
        proposals.review(proposal.id, "ana", "approve", "", proposal.sha256)
    approved = proposals.review(proposal.id, "ben", "approve", "fine", proposal.sha256)
    assert [(a.reviewer, a.comment) for a in approved.approvals] == [("ben", "fine")]
    with pytest.raises(ProposalRefused, match="already reviewed"):
        proposals.review(proposal.id, "ben", "approve", "", proposal.sha256)


def test_an_approval_counts_only_for_the_proposed_bytes_and_a_changed_text_supersedes(proposals):
    first = proposals.propose("demo-dosing", "1.1.0", "text one", "ana", D("2026-04-01"))
    with pytest.raises(ProposalRefused, match="a changed text needs a new proposal"):
        proposals.review(first.id, "ben", "approve", "", sha256("text one, edited"))
    assert proposals.propose("demo-dosing", "1.1.0", "text one", "ana", D("2026-04-01")).id == first.id, \
        "the same bytes again are the same proposal"
    second = proposals.propose("demo-dosing", "1.1.0", "text two", "ana", D("2026-04-01"))
    old = proposals.get(first.id)
    assert (old.status, old.superseded_by) == ("superseded", second.id)
    with pytest.raises(ProposalRefused, match="is superseded"):
        proposals.review(first.id, "ben", "approve", "", first.sha256)
    assert proposals.open_for("demo-dosing", "1.1.0", first.sha256) is None
    assert proposals.open_for("demo-dosing", "1.1.0", second.sha256).id == second.id


def test_a_rejection_needs_a_comment_and_closes_the_proposal(proposals):
    proposal = proposals.propose("demo-dosing", "1.1.0", "text", "ana", D("2026-04-01"))
    with pytest.raises(ProposalRefused, match="rejection needs a comment"):
        proposals.review(proposal.id, "ben", "reject", "  ", proposal.sha256)
    rejected = proposals.review(proposal.id, "ben", "reject", "the threshold is not the protocol's", proposal.sha256)
    assert rejected.status == "rejected" and rejected.rejection.comment == "the threshold is not the protocol's"
    with pytest.raises(ProposalRefused, match="is rejected"):
        proposals.review(proposal.id, "cy", "approve", "", proposal.sha256)


# --- the command line --------------------------------------------------------------------------------


def test_the_command_line_refuses_a_governed_release_without_approvals_and_records_them(demo, store_url, capsys):
    govern(demo, 1)
    path = demo_version(demo, "1.0.0")
    release = ["release", str(path), "--effective-from", "2026-01-01"]
    assert main([*release, "--approved-by", "Board"]) == 1
    assert "released under four eyes" in capsys.readouterr().err
    store = Store(store_url)
    store.migrate()
    assert main([*release, "--db", store_url]) == 1
    assert "no open proposal" in capsys.readouterr().err

    proposal = store.proposals.propose("demo-dosing", "1.0.0", path.read_text(), "ana", D("2026-01-01"))
    assert main([*release, "--db", store_url]) == 1
    assert "needs 1 approval" in capsys.readouterr().err
    store.proposals.review(proposal.id, "ben", "approve", "as the protocol says", proposal.sha256)
    assert main([*release, "--db", store_url]) == 0
    out = capsys.readouterr().out
    assert "approved by ben" in out and "proposed by ana" in out
    entry = versions.read_manifest(demo)["1.0.0"]
    assert (entry.sha256, entry.proposed_by) == (proposal.sha256, "ana")
    assert [(a.approver, a.comment) for a in entry.approvals] == [("ben", "as the protocol says")]
    assert store.proposals.get(proposal.id).status == "released"


def test_an_emergency_release_records_its_reason_and_shows_it(demo, tmp_path, capsys):
    govern(demo, 2)
    path = demo_version(demo, "1.0.0")
    release = ["release", str(path), "--effective-from", "2026-01-01", "--emergency-reason", "card shows a wrong dose"]
    assert main(release) == 1 and "needs --approved-by" in capsys.readouterr().err
    assert main([*release, "--approved-by", "On-call pharmacist"]) == 0
    assert "EMERGENCY release without the approvals its governance asks for: card shows a wrong dose" in \
        capsys.readouterr().out
    assert versions.read_manifest(demo)["1.0.0"].emergency_reason == "card shows a wrong dose"
    page = make_app(tmp_path, rules=demo.parent).test_client().get("/workbench/rulesets/demo-dosing/1.0.0")
    assert page.status_code == 200
    assert "Emergency release without its approvals: card shows a wrong dose" in page.get_data(as_text=True)


# --- the workbench -----------------------------------------------------------------------------------


@pytest.fixture
def governed_rules(tmp_path) -> Path:
    return governed_copy(tmp_path, 2)


def propose_form(rules: Path, version: str = "1.1.0") -> dict[str, str]:
    return {"ruleset": "hetrombopag", "version": version, "effective_from": "2026-04-01", "note": "Amendment 1",
            "text": (rules / "hetrombopag" / f"{version}.yaml").read_text()}


def test_the_shared_token_and_an_unauthenticated_workbench_cannot_propose(tmp_path, governed_rules, store_url):
    client = users_app(tmp_path, governed_rules, store_url).test_client()
    shared = {"Authorization": f"Bearer {SHARED}"}
    assert client.get("/workbench/proposals", headers=shared).status_code == 200, "the shared token may look"
    checked = client.post("/workbench/check", headers=shared,
                          data={"text": propose_form(governed_rules)["text"], "ruleset": "hetrombopag"})
    assert 'id="propose-note"' in checked.get_data(as_text=True) and 'id="propose-form"' not in checked.get_data(
        as_text=True), "the page offers proposing only to an author"
    refused = client.post("/workbench/propose", data=propose_form(governed_rules), headers=shared)
    assert refused.status_code == 403 and "names nobody" in refused.get_data(as_text=True)
    not_author = client.post("/workbench/propose", data=propose_form(governed_rules), headers=bearer("ben"))
    assert not_author.status_code == 403 and "ben does not hold the author role" in not_author.get_data(as_text=True)

    loopback = make_app(tmp_path / "open", rules=governed_rules).test_client()
    refused = loopback.post("/workbench/propose", data=propose_form(governed_rules))
    assert refused.status_code == 403 and "without authentication" in refused.get_data(as_text=True)
    assert Store(store_url).proposals.listing() == []


def test_a_user_logs_in_with_their_own_token_and_the_page_names_them(tmp_path, governed_rules, store_url):
    client = users_app(tmp_path, governed_rules, store_url).test_client()
    assert client.post("/workbench/login", data={"token": token("ana")}).status_code == 302
    page = client.get("/workbench/check", query_string={"from": "hetrombopag@1.1.0"})
    assert page.status_code == 200 and "<span>ana</span>" in page.get_data(as_text=True)
    proposed = client.post("/workbench/propose", data=propose_form(governed_rules))
    assert proposed.status_code == 302, proposed.get_data(as_text=True)
    assert Store(store_url).proposals.listing()[0].proposed_by == "ana"
    released = client.post("/workbench/propose", data=propose_form(governed_rules, "1.0.0"))
    assert released.status_code == 409 and "already released" in released.get_data(as_text=True)
    older = {**propose_form(governed_rules, "1.0.0"), "version": "0.9.0"}
    older["text"] = older["text"].replace("version: 1.0.0", "version: 0.9.0", 1)
    refused = client.post("/workbench/propose", data=older)
    assert refused.status_code == 409 and "not greater than every released version" in refused.get_data(as_text=True)


def test_a_proposals_check_is_made_once_until_a_rules_file_changes(tmp_path, governed_rules):
    """The review page, the dossier and each approval show the proposal's check: made once for its text, and made
    again once any file under the rules directory changes (a site mapping or a test bundle the check reads)."""
    from engine.loader import SITE_MAPPING
    from webhook.workbench.proposals import check_text

    app = users_app(tmp_path, governed_rules, f"sqlite:///{tmp_path / 'wb.db'}")
    text = propose_form(governed_rules)["text"]
    with app.test_request_context():
        first = check_text("hetrombopag", text)
        assert first.ok and check_text("hetrombopag", text) is first
        assert check_text("hetrombopag", text + "# another text\n") is not first
        mapping = governed_rules / SITE_MAPPING
        mapping.write_text(mapping.read_text() + "# a comment\n")
        again = check_text("hetrombopag", text)
        assert again is not first and again.ok


def test_the_release_follows_the_approvals_needed_and_records_them(tmp_path, governed_rules, store_url):
    app = users_app(tmp_path, governed_rules, store_url)
    client = app.test_client()
    form = propose_form(governed_rules)
    form["text"] += "# as proposed in the release test\n"  # a text this process's engine has not seen
    before = set(runtime._REGISTERED)
    checked = client.post("/workbench/check", data={"text": form["text"], "ruleset": "hetrombopag"},
                          headers=bearer("dee"))
    assert 'id="propose-form"' in checked.get_data(as_text=True), "a draft that passes can be proposed from the page"
    proposed = client.post("/workbench/propose", data=form, headers=bearer("dee"))
    assert proposed.status_code == 302
    page_url = proposed.headers["Location"]
    proposal = Store(store_url).proposals.listing()[0]
    assert proposal.sha256 == sha256(form["text"])

    review = client.get(page_url, headers=bearer("ben")).get_data(as_text=True)
    assert "hetrombopag 1.0.0 → 1.1.0" in review, "the diff is against the version in effect on 2026-04-01"
    assert 'id="taken-over-1.0.1"' in review and "from 2026-12-02 on, hetrombopag@1.0.1 decides" in review, \
        "1.0.1 is released from 2026-12-02, after this version's first day, and takes over on its date"
    assert "Behavioural impact" in review and 'id="review-form"' in review
    assert "0 of 2 needed" in review and "2026-04-01" in review

    approve = {"decision": "approve", "sha256": proposal.sha256, "comment": "matches the amendment"}
    own = client.post(f"/workbench/proposals/{proposal.id}/review", data=approve, headers=bearer("dee"))
    assert own.status_code == 409 and "dee proposed this release and may not review it" in own.get_data(as_text=True)
    assert client.post(f"/workbench/proposals/{proposal.id}/review", data=approve,
                       headers=bearer("ana")).status_code == 403, "an author without the approver role"
    assert client.post(f"/workbench/proposals/{proposal.id}/review", data=approve,
                       headers=bearer("ben")).status_code == 302
    assert versions.read_manifest(governed_rules / "hetrombopag").get("1.1.0") is None, "one approval of two"
    assert not (governed_rules / versions.RELOAD_MARKER).exists()

    client.post(f"/workbench/proposals/{proposal.id}/review", data={**approve, "comment": "checked"},
                headers=bearer("cy"))
    folder = governed_rules / "hetrombopag"
    assert (folder / "1.1.0.yaml").read_text() == form["text"]
    entry = versions.read_manifest(folder)["1.1.0"]
    assert (entry.sha256, entry.proposed_by, entry.effective_from) == (proposal.sha256, "dee", D("2026-04-01"))
    assert [(a.approver, a.comment) for a in entry.approvals] == [("ben", "matches the amendment"), ("cy", "checked")]
    assert (governed_rules / versions.RELOAD_MARKER).exists(), "every instance is told to reload"
    assert versions.load_catalog(governed_rules).select("hetrombopag", D("2026-04-01")).version == "1.1.0"
    listing = client.get("/workbench/", headers=bearer("ben")).get_data(as_text=True)
    assert "1.1.0" in listing and "ben, cy" in listing
    assert Store(store_url).proposals.get(proposal.id).status == "released"
    assert set(runtime._REGISTERED) == before, "the release's tests ran in the sandbox, not in the EHR's engine"


def test_the_review_is_against_the_version_in_effect_on_the_proposals_first_day(tmp_path, governed_rules,
                                                                                 store_url):
    """Today (2026-03-19) 1.0.0 is in effect; 1.0.1 is released from 2026-12-02. A proposal effective after that
    replaces 1.0.1, so that is what its approvers must see it against."""
    client = users_app(tmp_path, governed_rules, store_url).test_client()
    form = {**propose_form(governed_rules), "effective_from": "2026-12-10"}
    proposed = client.post("/workbench/propose", data=form, headers=bearer("dee"))
    assert proposed.status_code == 302, proposed.get_data(as_text=True)
    review = client.get(proposed.headers["Location"], headers=bearer("ben")).get_data(as_text=True)
    assert "Against the version it replaces on 2026-12-10 (hetrombopag@1.0.1)" in review
    assert "hetrombopag 1.0.1 → 1.1.0" in review and "hetrombopag 1.0.0 → 1.1.0" not in review
    assert "taken-over-" not in review, "no released version takes effect after 2026-12-10"


def test_a_review_of_other_bytes_is_refused_and_a_changed_text_supersedes(tmp_path, governed_rules, store_url):
    client = users_app(tmp_path, governed_rules, store_url).test_client()
    form = propose_form(governed_rules)
    client.post("/workbench/propose", data=form, headers=bearer("ana"))
    first = Store(store_url).proposals.listing()[0]
    stale = client.post(f"/workbench/proposals/{first.id}/review", headers=bearer("ben"),
                        data={"decision": "approve", "sha256": sha256(form["text"] + "\n# edited"), "comment": ""})
    assert stale.status_code == 409 and "a changed text needs a new proposal" in stale.get_data(as_text=True)

    changed = {**form, "text": form["text"] + "\n# reworded after review\n"}
    assert client.post("/workbench/propose", data=changed, headers=bearer("ana")).status_code == 302
    again = client.post(f"/workbench/proposals/{first.id}/review", headers=bearer("ben"),
                        data={"decision": "approve", "sha256": first.sha256, "comment": ""})
    assert again.status_code == 409 and "is superseded" in again.get_data(as_text=True)
    rejected = client.post(f"/workbench/proposals/{first.id + 1}/review", headers=bearer("ben"),
                           data={"decision": "reject", "sha256": sha256(changed["text"]), "comment": ""})
    assert rejected.status_code == 409 and "rejection needs a comment" in rejected.get_data(as_text=True)


def test_names_from_the_trusted_header_get_their_roles_from_the_config(tmp_path, governed_rules, store_url):
    section = {"trusted_header": "X-Forwarded-User", "trusted_header_roles": {"ana": ["author"], "ben": ["approver"]}}
    client = make_app(tmp_path, auth={"workbench": section}, rules=governed_rules, DB_URL=store_url).test_client()
    form = propose_form(governed_rules)
    unlisted = client.post("/workbench/propose", data=form, headers={"X-Forwarded-User": "zoe"})
    assert unlisted.status_code == 403 and "zoe does not hold the author role" in unlisted.get_data(as_text=True)
    assert client.post("/workbench/propose", data=form, headers={"X-Forwarded-User": "ana"}).status_code == 302
    assert Store(store_url).proposals.listing()[0].proposed_by == "ana"


@pytest.mark.parametrize("users,message", [
    ([{"name": "ana", "token_sha256": "0" * 64, "roles": ["author"]},
      {"name": "ana", "token_sha256": "1" * 64, "roles": ["approver"]}], "named twice"),
    ([{"name": "ana", "token_sha256": "0" * 64, "roles": ["author"]},
      {"name": "ben", "token_sha256": "0" * 64, "roles": ["approver"]}], "a token of their own"),
    ([{"name": "ana", "token_sha256": "0" * 64, "roles": ["owner"]}], "roles must be"),
])
def test_users_in_the_auth_config_are_checked(tmp_path, users, message):
    (tmp_path / "session.secret").write_text(SECRET)
    with pytest.raises(WorkbenchConfigError, match=message):
        make_app(tmp_path, auth={"workbench": {"users": users, "session_secret_file": "session.secret"}})


def test_a_user_cookie_is_bound_to_that_users_token(tmp_path, governed_rules, store_url):
    app = users_app(tmp_path, governed_rules, store_url)
    policy = app.extensions["cdsrules.workbench.access"]
    cookie = access.cookie_value(policy, user="ben")
    assert access.cookie_caller(policy, cookie).user.name == "ben"
    issued, expires, _, signature = cookie.split(".")
    forged = ".".join([issued, expires, b"cy".hex(), signature])  # ben's session passed off as cy's
    assert access.cookie_caller(policy, forged) is None
    assert access.cookie_caller(policy, access.cookie_value(policy)).user is None, "the shared token names nobody"


def test_a_refused_release_leaves_the_draft_as_it_was_and_the_proposal_open(tmp_path, governed_rules, store_url):
    folder = governed_rules / "hetrombopag"
    govern(folder, 1)
    client = users_app(tmp_path, governed_rules, store_url).test_client()
    form = propose_form(governed_rules)
    on_disk = form["text"]
    reworded = {**form, "text": on_disk + "\n# reworded for the committee\n"}
    assert client.post("/workbench/propose", data=reworded, headers=bearer("ana")).status_code == 302
    proposal = Store(store_url).proposals.listing()[0]
    greater = folder / "1.2.0.yaml"  # released meanwhile, in an emergency: 1.1.0 is no longer greater
    greater.write_text(on_disk.replace("version: 1.1.0", "version: 1.2.0", 1))
    (folder / "1.2.0.tests.yaml").write_bytes((folder / "1.1.0.tests.yaml").read_bytes())  # the coverage
    versions.release(greater, D("2026-03-01"), "On-call pharmacist", emergency_reason="wrong dose on a card")

    approved = client.post(f"/workbench/proposals/{proposal.id}/review", headers=bearer("ben"),
                           data={"decision": "approve", "sha256": proposal.sha256, "comment": "fine"})
    page = approved.get_data(as_text=True)
    assert approved.status_code == 409 and "Approved, but not released" in page and "not greater" in page
    assert (folder / "1.1.0.yaml").read_text() == on_disk, "the draft is as it was before the refused release"
    assert "1.1.0" not in versions.read_manifest(folder)
    assert Store(store_url).proposals.get(proposal.id).status == "open"
    again = client.post(f"/workbench/proposals/{proposal.id}/release", headers=bearer("ben"))
    assert again.status_code == 409 and "Not released" in again.get_data(as_text=True)


def test_a_store_without_proposals_is_named_not_a_traceback(demo, tmp_path, capsys):
    govern(demo, 1)
    path = demo_version(demo, "1.0.0")
    old = Store(f"sqlite:///{tmp_path / 'old.db'}")
    old.migrate("0004")  # made before proposals existed
    assert main(["release", str(path), "--effective-from", "2026-01-01", "--db", old.url]) == 1
    assert "cannot read the proposals in the store" in capsys.readouterr().err
