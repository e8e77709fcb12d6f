"""Four-eyes release in the workbench: propose a checked draft, review it against the version it replaces, approve
or reject it; the approval that completes the count releases it (webhook/workbench/releasing.py).

The version it replaces is the one in effect on the day the proposal starts to decide: its effective date, or today
for one dated earlier. The service chooses the released version with the latest effective date, whatever its
number, so a version already released to take effect later than that day takes over again on its own date; the
review names each such version.

`propose(ruleset_id, version, text, ...)` takes the text from wherever it comes (the check page today); the store
freezes those bytes (store/proposals.py) and every review names the sha256 the reviewer was shown. Proposing needs
the `author` role and reviewing the `approver` role, held by a named user (webhook/workbench/access.py): the shared
token and an unauthenticated workbench name nobody, so they may look but do neither.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from flask import Response, abort, redirect, render_template, request, url_for

from engine.diff import VersionDiff, behavioural_impact, render_markdown, structural_changes, test_cases
from engine.errors import EvaluationError
from engine.model import Parameter, Ruleset
from engine.versions import (
    APPLIES_TO_ALL,
    APPLIES_TO_NEW_THERAPIES,
    Release,
    ReleaseRefused,
    chosen_on,
    is_version,
    taking_effect_after,
    version_key,
)
from store.proposals import APPROVE, OPEN, Proposal, ProposalRefused
from webhook.workbench import access
from webhook.workbench.compare import cohort_cases
from webhook.workbench.context import VersionInfo
from webhook.workbench.drafts import DraftCheck, as_shown, check_in_child, not_checked
from webhook.workbench.readiness import APPLIES_TO_CHOICES, ProposedCoverage, proposed_coverage, whom_it_changes
from webhook.workbench.releasing import approvals_required, release_if_approved
from webhook.workbench.views import bp, parse_date, sandbox, snapshot, today, workbench


def proposals_store():
    return workbench().store.proposals


@bp.app_context_processor
def _identity() -> dict:
    """The user asking, for pages that offer proposing or reviewing only to those who may."""
    return {"current_user": access.current_user(), "AUTHOR": access.AUTHOR}


def _user_with(role: str) -> access.User:
    """The user asking, if they hold `role`; else a 403 that says what is missing."""
    user = access.current_user()
    if user is None:
        abort(403, description="Proposing and approving a release need a named user, and this session names "
                               "nobody (the shared workbench token, or a workbench without authentication): log in "
                               "with your own token, as the auth config's workbench.users lists it.")
    if not user.may(role):
        abort(403, description=f"{user.name} does not hold the {role} role in the auth config.")
    return user


def check_text(ruleset_id: str, text: str) -> DraftCheck:
    """The draft check (validation and its tests), in the sandbox child as the check page runs it; once per text
    while the rules directory stays as it is."""
    rules_dir = workbench().rules_dir
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    try:
        return workbench().checked(ruleset_id, digest, lambda: sandbox().run(
            check_in_child, text, ruleset_id, rules_dir, doing="checking the proposal", version="draft " + digest))
    except EvaluationError as error:
        return as_shown(not_checked(rules_dir / ruleset_id / "draft.yaml", str(error)), rules_dir)


def propose(ruleset_id: str, version: str, text: str, effective_from: dt.date, note: str = "",
            applies_to: str = APPLIES_TO_ALL) -> Proposal:
    """Propose `text` as the release of ruleset_id@version by the user asking, for all patients or for therapies
    started from `effective_from` on (`applies_to`); ProposalRefused says why not."""
    user = _user_with(access.AUTHOR)
    if applies_to not in APPLIES_TO_CHOICES:
        raise ProposalRefused(f"a release applies to {' or '.join(APPLIES_TO_CHOICES)}, not {applies_to!r}")
    if ruleset_id not in snapshot().versions:
        raise ProposalRefused(f"there is no ruleset '{ruleset_id}' under the rules directory")
    released = [v for v, info in snapshot().versions[ruleset_id].items() if info.release is not None]
    if version in released:
        raise ProposalRefused(f"{ruleset_id}@{version} is already released; released versions never change")
    if is_version(version) and any(version_key(v) >= version_key(version) for v in released):
        raise ProposalRefused(f"{version} is not greater than every released version of {ruleset_id} "
                              f"({', '.join(released)}); propose a greater version")
    check = check_text(ruleset_id, text)
    if check.ruleset is None or not check.ok:
        raise ProposalRefused("only a draft that is valid and passes its tests can be proposed; check it first")
    if check.ruleset.version != version or check.ruleset.id != ruleset_id:
        raise ProposalRefused(f"the text is {check.ruleset.ref}, not {ruleset_id}@{version}")
    if applies_to == APPLIES_TO_NEW_THERAPIES and check.ruleset.therapy_start is None:
        raise ProposalRefused(f"{check.ruleset.ref} names no therapy_start fact, so whether a therapy started before "
                              "its effective date cannot be told; it can only apply to all")
    return proposals_store().propose(ruleset_id, version, text, user.name, effective_from, note, applies_to)


# --- pages ------------------------------------------------------------------------------------


def propose_page() -> Response:
    """From the check page's form: the text, its ruleset, the effective date and a note."""
    form = request.form
    effective_from = parse_date(form.get("effective_from"), today())
    # A browser sends a text box's lines ending in CR LF (HTML's form encoding); the file is written as it was typed.
    text = form.get("text", "").replace("\r\n", "\n")
    try:
        proposal = propose(form.get("ruleset", ""), form.get("version", ""), text, effective_from,
                           form.get("note", ""), form.get("applies_to", APPLIES_TO_ALL))
    except ProposalRefused as refusal:
        abort(409, description=str(refusal))
    return redirect(url_for("workbench.proposal_page", proposal_id=proposal.id))


def proposal_list() -> str:
    return render_template("proposals.html", proposals=proposals_store().listing())


@dataclass
class Review:
    """What an approver sees of a proposal: its check, its diff against the version it replaces, what is open."""

    proposal: Proposal
    check: DraftCheck
    starts: dt.date  # the first day it would decide
    in_effect: VersionInfo | None  # the version it replaces on that day
    later: list[Release]  # released versions that take over again on their own, later, effective dates
    diff: VersionDiff | None
    pending: list[Parameter]
    required: int
    coverage: ProposedCoverage


def _released(ruleset_id: str) -> dict[str, VersionInfo]:
    """The ruleset's released versions that load, by version."""
    return {i.version: i for i in snapshot().versions.get(ruleset_id, {}).values() if i.ruleset and i.release}


def _review(proposal: Proposal, with_diff: bool = True) -> Review:
    check = check_text(proposal.ruleset, proposal.text)
    starts = max(proposal.effective_from, today())
    released = _released(proposal.ruleset)
    releases = {version: info.release for version, info in released.items() if info.release}
    chosen = chosen_on(releases, starts)  # the version it replaces, as the service would choose it
    current = None if chosen is None else released[chosen.version]
    diff = None
    if with_diff and check.ruleset is not None and current is not None and current.ruleset is not None:
        diff = _diff(current.ruleset, check.ruleset, proposal.effective_from)
    pending = [p for p in check.ruleset.parameters.values() if "pending" in p.source] if check.ruleset else []
    return Review(proposal, check, starts, current, taking_effect_after(releases, starts), diff, pending,
                  approvals_required(workbench().rules_dir / proposal.ruleset),
                  proposed_coverage(proposal.ruleset, check.ruleset, check.results))


def _diff(old: Ruleset, new: Ruleset, effective_from: dt.date) -> VersionDiff:
    """As `cdsrules diff --cohort`: structure, decisions on both versions' tests and the synthetic cohort, and the
    cohort patients each choice of whom the new version applies to would change from its proposed effective date."""
    cohort = cohort_cases(old.id)
    impact = behavioural_impact(old, new, test_cases(old, new) + cohort, sandbox())
    return VersionDiff(old.id, old.version, new.version, structural_changes(old, new), impact,
                       whom_it_changes(new, cohort, impact, effective_from))


def _found(proposal_id: int) -> Proposal:
    proposal = proposals_store().get(proposal_id)
    if proposal is None:
        abort(404, description=f"There is no proposal {proposal_id}.")
    return proposal


def proposal_page(proposal_id: int, problem: str = "") -> str:
    review = _review(_found(proposal_id))
    user = access.current_user()
    return render_template("proposal.html", review=review, proposal=review.proposal,
                           markdown=render_markdown(review.diff) if review.diff else "",
                           may_review=bool(user and user.may(access.APPROVER)
                                           and user.name != review.proposal.proposed_by),
                           problem=problem, applies_to_choices=APPLIES_TO_CHOICES)


def _after(proposal_id: int, problem: str) -> Response:
    """Back to the proposal's page; shown at once, with a 409, when something was refused."""
    if problem:
        return Response(proposal_page(proposal_id, problem), status=409)
    return redirect(url_for("workbench.proposal_page", proposal_id=proposal_id))


def review_page(proposal_id: int) -> Response:
    """Approve or reject, with a comment, the bytes whose sha256 the page showed; the approval that completes the
    count releases the version."""
    user = _user_with(access.APPROVER)
    found = _found(proposal_id)
    decision = request.form.get("decision", "")
    if decision == APPROVE and found.status == OPEN:
        refusal = _review(found, with_diff=False).coverage.refusal
        if refusal:
            abort(409, description=f"Not approved: {refusal}.")
    try:
        proposal = proposals_store().review(proposal_id, user.name, decision, request.form.get("comment", ""),
                                            request.form.get("sha256", ""))
    except ProposalRefused as refusal:
        abort(409, description=str(refusal))
    problem = ""
    if decision == APPROVE:
        try:
            release_if_approved(workbench().rules_dir, proposals_store(), proposal, sandbox())
        except ReleaseRefused as refusal:
            problem = f"Approved, but not released: {refusal}"
    return _after(proposal_id, problem)


def release_page(proposal_id: int) -> Response:
    """Try the release again (after a refusal whose cause has been fixed), by an approver."""
    _user_with(access.APPROVER)
    problem = ""
    try:
        if release_if_approved(workbench().rules_dir, proposals_store(), _found(proposal_id), sandbox()) is None:
            problem = "Not released: the proposal is not open or lacks approvals."
    except ReleaseRefused as refusal:
        problem = f"Not released: {refusal}"
    return _after(proposal_id, problem)
