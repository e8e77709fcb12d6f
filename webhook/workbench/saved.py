"""Drafts saved in the store: "Save as draft X.Y.Z" on the check page, listed on the rulesets page, opened again in
the check page; every instance sharing the store sees them. Never served: the hook services read released files
from the rules folder only.

A released version can never be a draft, and a version that is a file in the rules folder is that file's: saving
either is refused. Saving a version again adds a revision; the earlier texts stay in the store.
"""
from __future__ import annotations

import re

from flask import g, redirect, request, url_for
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response

from engine.edits import EditError, SetVersion, apply_edit
from engine.errors import EvaluationError
from engine.versions import version_key
from store import SavedDraft
from store.tables import drafts
from webhook.workbench.views import policy, sandbox, snapshot, workbench

_SEMVER = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$")  # as the schema


class SaveRefused(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def current_author() -> str | None:
    """Who saves: the user the trusted proxy names, when the workbench is reached through one; else nobody known
    (a token or loopback says who may, not who is)."""
    rule = policy()
    if not g.get("workbench_user") or not rule.trusted_header or request.remote_addr not in rule.trusted_proxies:
        return None
    user = (request.headers.get(rule.trusted_header) or "").strip()
    return user[:drafts.c.author.type.length] or None  # a name past the column is kept by its start


def set_version_in_child(text: str, version: str) -> tuple[str, str]:
    """(the text with its top-level version set, a problem); run in the sandbox's child: the text is a draft."""
    try:
        return apply_edit(text, SetVersion(version)), ""
    except EditError as error:
        return text, str(error)


def save(text: str, ruleset_id: str, version: str) -> SavedDraft:
    """Save the text as ruleset_id@version (its version line set to it); SaveRefused says why not."""
    version = version.strip()
    if not _SEMVER.match(version) or len(version) > drafts.c.version.type.length:
        raise SaveRefused(f"'{version}' is not a semantic version (such as 1.2.0)", 400)
    versions = snapshot().versions
    if ruleset_id not in versions:
        raise SaveRefused(f"no ruleset '{ruleset_id}' under the rules directory", 400)
    existing = versions[ruleset_id].get(version)
    if existing is not None and existing.release is not None:
        raise SaveRefused(f"{ruleset_id}@{version} is released; a released version can never be a draft. Save the "
                          "amendment under a new version.", 409)
    if existing is not None:
        raise SaveRefused(f"{ruleset_id}@{version} is a file in the rules directory ({existing.path.name}); save "
                          "the amendment under another version", 409)
    try:
        text, problem = sandbox().run(set_version_in_child, text, version, doing="setting the draft's version")
    except EvaluationError as error:
        raise SaveRefused(str(error), 503) from None
    if problem:
        raise SaveRefused(f"the draft's version cannot be set: {problem}", 400)
    saved: SavedDraft = workbench().store.save_draft(ruleset_id, version, text, current_author())
    return saved


def save_draft() -> Response | tuple[str, int]:
    """POST from the check page's form: save, then open the saved draft (or the page again, saying why not)."""
    from webhook.workbench.drafts import render_check  # the check page renders; this module saves

    text, ruleset_id = request.form.get("text", ""), request.form.get("ruleset", "")
    try:
        saved = save(text, ruleset_id, request.form.get("save_version", ""))
    except SaveRefused as refused:
        return render_check(text, ruleset_id, base=request.form.get("base") or None,
                            save_problem=str(refused)), refused.status
    return redirect(url_for("workbench.check", draft=saved.ref, saved=saved.revision), code=303)


def find_saved(ref: str | None) -> SavedDraft | None:
    """A saved draft by `id@version`, unless that version has since become a file (a release) in the rules
    directory: then the file is what that version is."""
    if not ref or "@" not in ref:
        return None
    ruleset_id, _, version = ref.partition("@")
    if snapshot().find(ruleset_id, version) is not None:
        return None
    draft: SavedDraft | None = workbench().store.draft(ruleset_id, version)
    return draft


def listed() -> tuple[dict[str, list[SavedDraft]], str]:
    """The saved drafts for the rulesets page, by ruleset, newest version first; those whose version is now a file
    in the rules directory are left out (it is that file's version). With the store out of reach: none, and why
    (the files are listed all the same)."""
    versions = snapshot().versions
    found: dict[str, list[SavedDraft]] = {}
    try:
        stored = workbench().store.drafts()
    except SQLAlchemyError as error:
        return {}, f"the saved drafts cannot be read from the store ({type(error).__name__})"
    for draft in stored:
        if draft.ruleset in versions and draft.version not in versions[draft.ruleset]:
            found.setdefault(draft.ruleset, []).append(draft)
    return {rid: sorted(drafts, key=lambda d: version_key(d.version), reverse=True)
            for rid, drafts in found.items()}, ""
