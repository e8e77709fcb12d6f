"""The pharmacist workbench: see, check, try and compare rulesets in the browser, under /workbench/.

Server-rendered pages (Jinja2), plain CSS, a little JavaScript and inline SVG; nothing is fetched from the
internet. Off unless the server is started with `--workbench`; access is checked by `access.py`.

    register_workbench(app, settings)   # settings: the app's config (RULES_DIR, DB_URL, AUTH_CONFIG, CLOCK, ...)

Optional settings: WORKBENCH_COHORT (a folder written by `cdsrules cohort generate`; default: a generated cohort).
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from flask import Flask

from engine.sandbox import SandboxEngine
from webhook.workbench import (
    access,
    amend,
    compare,
    dossier,
    drafts,
    outcomes,
    patients,
    proposal_dossier,
    proposals,
    propose_saved,
    rulesets,
    saved,
    timeline,
)
from webhook.workbench.context import Workbench
from webhook.workbench.throttle import Throttle
from webhook.workbench.views import bp

PAGES = [  # (URL rule under /workbench, view, methods): every page of the workbench, in one place
    ("/", rulesets.rulesets, ["GET"]),
    ("/rulesets/<ruleset_id>/<version>", rulesets.version, ["GET"]),
    ("/rulesets/<ruleset_id>/<version>/dossier", dossier.dossier, ["GET"]),
    ("/rulesets/<ruleset_id>/<version>/dossier.pdf", dossier.dossier_as_pdf, ["GET"]),
    ("/check", drafts.check, ["GET", "POST"]),
    ("/check.json", drafts.check_json, ["POST"]),
    ("/amend.json", amend.amend_json, ["POST"]),
    ("/drafts/save", saved.save_draft, ["POST"]),
    ("/try", patients.try_patient, ["GET", "POST"]),
    ("/timeline", timeline.timeline, ["GET", "POST"]),
    ("/compare", compare.compare, ["GET"]),
    ("/compare.md", compare.compare_markdown, ["GET"]),
    ("/outcomes", outcomes.outcomes, ["GET"]),
    ("/propose", proposals.propose_page, ["POST"]),
    ("/drafts/propose", propose_saved.propose_saved, ["POST"]),
    ("/proposals", proposals.proposal_list, ["GET"]),
    ("/proposals/<int:proposal_id>", proposals.proposal_page, ["GET"]),
    ("/proposals/<int:proposal_id>/review", proposals.review_page, ["POST"]),
    ("/proposals/<int:proposal_id>/release", proposals.release_page, ["POST"]),
    ("/proposals/<int:proposal_id>/dossier", proposal_dossier.proposal_dossier, ["GET"]),
    ("/proposals/<int:proposal_id>/dossier.pdf", proposal_dossier.proposal_dossier_as_pdf, ["GET"]),
]
for _rule, _view, _methods in PAGES:  # once, when the package is first imported; the login page is in views.py
    bp.add_url_rule(_rule, view_func=_view, methods=_methods)


def register_workbench(app: Flask, settings: dict[str, Any]) -> None:
    """Mount the workbench on an app built by `create_app`; raises WorkbenchConfigError when it cannot be secured."""
    policy = access.policy_from(settings.get("AUTH_CONFIG"), settings.get("ALLOWED_HOSTS", ()))
    runtime = app.extensions.get("cdsrules")
    app.extensions["cdsrules.workbench"] = Workbench(
        rules_dir=Path(settings.get("RULES_DIR", "rules")),
        engine=SandboxEngine(),  # drafts never enter this process's engine (see engine/sandbox.py)
        store=runtime.store if runtime else _store(settings),
        clock=settings.get("CLOCK") or dt.date.today,
        cohort_dir=Path(settings["WORKBENCH_COHORT"]) if settings.get("WORKBENCH_COHORT") else None,
    )
    app.extensions["cdsrules.workbench.access"] = policy
    app.extensions["cdsrules.workbench.throttle"] = Throttle()  # per process: see throttle.py
    app.register_blueprint(bp)


def _store(settings: dict[str, Any]):
    from store import DEFAULT_DB_URL, Store

    store = Store(settings.get("DB_URL", DEFAULT_DB_URL))
    store.create_tables()
    return store
