"""The release dossier of a proposal's frozen text, before it is released: what governance would file for it, as a
page and as a PDF, made as the version dossier is (webhook/workbench/dossier.py) from the proposal's bytes instead
of a file. It is a draft's dossier: no release record yet, and the proposal's terms (who proposed it, from which
date, for whom) shown in its place.
"""
from __future__ import annotations

from flask import Response, abort, url_for

from engine.dossier import Dossier, ReleaseRecord, build_dossier, measure_impact, previous_version
from store.proposals import Proposal
from webhook.workbench.compare import cohort_cases
from webhook.workbench.dossier_render import dossier_html, dossier_pdf
from webhook.workbench.proposals import check_text, proposals_store
from webhook.workbench.readiness import APPLIES_TO_CHOICES
from webhook.workbench.rulesets import ruleset_threshold
from webhook.workbench.views import csp_nonce, sandbox, snapshot, today, workbench


def proposal_dossier(proposal_id: int) -> str:
    proposal = _proposal(proposal_id)
    links = [("Proposed releases", url_for("workbench.proposal_list")),
             (f"Proposal {proposal.id}", url_for("workbench.proposal_page", proposal_id=proposal.id)),
             ("PDF", url_for("workbench.proposal_dossier_as_pdf", proposal_id=proposal.id))]
    return dossier_html(_dossier(proposal), nonce=csp_nonce(), links=links)


def proposal_dossier_as_pdf(proposal_id: int) -> Response:
    proposal = _proposal(proposal_id)
    name = f"{proposal.ruleset}-{proposal.version}-proposal-{proposal.id}-dossier.pdf"
    return Response(dossier_pdf(dossier_html(_dossier(proposal))), mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{name}"'})


def _proposal(proposal_id: int) -> Proposal:
    proposal = proposals_store().get(proposal_id)
    if proposal is None:
        abort(404, description=f"There is no proposal {proposal_id}.")
    return proposal


def _dossier(proposal: Proposal) -> Dossier:
    check = check_text(proposal.ruleset, proposal.text)
    if check.ruleset is None:
        abort(409, description=f"Proposal {proposal.id}'s text does not load, so it has no dossier; see the "
                               "proposal's page for why.")
    loadable = {v: i for v, i in snapshot().versions.get(proposal.ruleset, {}).items() if i.ruleset}
    previous = previous_version(list(loadable), proposal.version)
    impact = None
    if previous is not None:
        older = loadable[previous].ruleset
        assert older is not None
        impact = measure_impact(older, check.ruleset, cohort_cases(proposal.ruleset),
                                len(workbench().cohort(proposal.ruleset)), sandbox())
    terms = {"proposal": f"{proposal.id} ({proposal.status})", "proposed_by": proposal.proposed_by,
             "proposed_at": proposal.proposed_at, "proposed_effective_from": proposal.effective_from.isoformat(),
             "applies_to": APPLIES_TO_CHOICES.get(proposal.applies_to, proposal.applies_to),
             "note": proposal.note or "—",
             "approvals": ", ".join(a.reviewer for a in proposal.approvals) or "none yet"}
    return build_dossier(check.ruleset, ReleaseRecord(proposal.sha256, None, terms), check.results, impact, today(),
                         ruleset_threshold(workbench().rules_dir / proposal.ruleset))
