"""The release dossier of a version as a page and as a PDF: engine.dossier's data, rendered by dossier_render from
the same HTML, measured on the workbench's cohort and engine."""
from __future__ import annotations

from flask import Response, url_for

from engine.dossier import Dossier, build_dossier, measure_impact, previous_version, release_record
from webhook.workbench.compare import cohort_cases
from webhook.workbench.dossier_render import dossier_html, dossier_pdf
from webhook.workbench.rulesets import ruleset_threshold
from webhook.workbench.views import csp_nonce, find_version, sandbox, snapshot, today, workbench


def dossier(ruleset_id: str, version: str) -> str:
    links = [("Rulesets", url_for("workbench.rulesets")),
             (f"{ruleset_id} {version}", url_for("workbench.version", ruleset_id=ruleset_id, version=version)),
             ("PDF", url_for("workbench.dossier_as_pdf", ruleset_id=ruleset_id, version=version))]
    return dossier_html(_dossier(ruleset_id, version), nonce=csp_nonce(), links=links)


def dossier_as_pdf(ruleset_id: str, version: str) -> Response:
    pdf = dossier_pdf(dossier_html(_dossier(ruleset_id, version)))
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{ruleset_id}-{version}-dossier.pdf"'})


def _dossier(ruleset_id: str, version: str) -> Dossier:
    info = find_version(ruleset_id, version)
    assert info.ruleset is not None  # find_version answers 404 for a version that does not load
    loadable = {v: i for v, i in snapshot().versions[ruleset_id].items() if i.ruleset}
    previous = previous_version(list(loadable), version)
    impact = None
    if previous is not None:
        older = loadable[previous].ruleset
        assert older is not None
        cases = cohort_cases(ruleset_id)
        impact = measure_impact(older, info.ruleset, cases, len(workbench().cohort(ruleset_id)), sandbox())
    return build_dossier(info.ruleset, release_record(info.path, info.release), info.results(sandbox()), impact,
                         today(), ruleset_threshold(info.path.parent))
