"""Propose a draft saved in the store, from its check page or its row on the rulesets page.

The text proposed is the store's, of the revision the author was shown (the form carries its sha256), never one the
browser sends: what was saved, checked and reviewed is what is frozen. A draft saved again meanwhile is refused, so
nobody proposes a revision they have not seen; saving again after proposing leaves the proposal's frozen bytes as
they were.
"""
from __future__ import annotations

from flask import Response, abort, redirect, request, url_for

from engine.versions import APPLIES_TO_ALL
from store.proposals import ProposalRefused
from webhook.workbench.proposals import propose
from webhook.workbench.saved import find_saved
from webhook.workbench.views import parse_date, today


def propose_saved() -> Response:
    """POST {draft: id@version, sha256, effective_from, applies_to, note} -> the proposal's page."""
    form = request.form
    draft = find_saved(form.get("draft"))
    if draft is None:
        abort(404, description=f"There is no saved draft {form.get('draft', '')!r} (a version that has become a file "
                               "in the rules directory is that file's).")
    if form.get("sha256") != draft.text_sha256:
        abort(409, description=f"{draft.ref} was saved again (revision {draft.revision}) since the page you proposed "
                               "it from was shown; open it again and propose the revision you have seen.")
    try:
        proposal = propose(draft.ruleset, draft.version, draft.text, parse_date(form.get("effective_from"), today()),
                           form.get("note", ""), form.get("applies_to", APPLIES_TO_ALL))
    except ProposalRefused as refusal:
        abort(409, description=str(refusal))
    return redirect(url_for("workbench.proposal_page", proposal_id=proposal.id), code=303)
