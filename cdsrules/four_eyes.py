"""`cdsrules release` under four eyes: a ruleset whose manifest names its governance is released from the command
line only on an approved proposal of exactly the file's bytes, read from the workbench's store (`--db`), or as an
emergency whose reason the manifest records (`--emergency-reason`).

A ruleset without governance is released as before, on the word of `--approved-by`.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

from cdsrules.audit import open_store
from engine import versions
from engine.governance import Approval
from engine.loader import load_ruleset

if TYPE_CHECKING:
    from store.proposals import Proposal


def release_file(file: str | Path, effective_from: dt.date | None, approved_by: str, note: str, db_url: str | None,
                 emergency_reason: str, applies_to: str = versions.APPLIES_TO_ALL) -> versions.Release:
    """Release the file as its ruleset's governance allows; versions.ReleaseRefused says why not."""
    file = Path(file)
    folder = file.parent
    governance = versions.read_governance(folder)
    if not governance.configured or emergency_reason.strip():
        if governance.configured and not approved_by.strip():
            raise versions.ReleaseRefused("an emergency release needs --approved-by: who decided it")
        return versions.release(file, _needed(effective_from), approved_by, note, applies_to=applies_to,
                                emergency_reason=emergency_reason)
    if not db_url:
        raise versions.ReleaseRefused(
            f"{folder.name} is released under four eyes ({versions.MANIFEST} names its governance: "
            f"{governance.approvals_required} approval(s)): give --db URL, the workbench's store holding the "
            "approved proposal of this file, or --emergency-reason")
    ruleset = load_ruleset(file)
    sha256 = versions.file_sha256(file)
    proposal = _open_proposal(db_url, folder.name, ruleset.version, sha256)
    if proposal is None:
        raise versions.ReleaseRefused(
            f"the store holds no open proposal of {ruleset.ref} with this file's sha256 {sha256[:12]}…: propose "
            "exactly this text in the workbench and have it approved")
    if applies_to != versions.APPLIES_TO_ALL and applies_to != proposal.applies_to:
        raise versions.ReleaseRefused(f"the approved proposal applies to {proposal.applies_to}, not {applies_to}: "
                                      "propose it again with whom it applies to")
    approvals = tuple(Approval(a.reviewer, a.reviewed_at, a.comment) for a in proposal.approvals)
    # Whom it applies to is part of what was approved: the proposal's, never the command line's default.
    entry = versions.release(file, effective_from or proposal.effective_from, approved_by, note or proposal.note,
                             applies_to=proposal.applies_to, proposed_by=proposal.proposed_by, approvals=approvals)
    open_store(db_url).proposals.mark_released(proposal.id)
    return entry


def _open_proposal(db_url: str, ruleset_id: str, version: str, sha256: str) -> Proposal | None:
    """The store's open proposal of exactly these bytes, or None; OSError when the store cannot say."""
    from sqlalchemy.exc import SQLAlchemyError  # the store loads only when a governed release reads it

    try:
        return open_store(db_url).proposals.open_for(ruleset_id, version, sha256)
    except SQLAlchemyError as error:
        raise OSError(f"cannot read the proposals in the store (is it migrated to the schema of this version? "
                      f"`cdsrules serve` migrates it): {type(error).__name__}") from None


def _needed(effective_from: dt.date | None) -> dt.date:
    if effective_from is None:
        raise versions.ReleaseRefused("a release needs --effective-from")
    return effective_from


def describe(entry: versions.Release) -> list[str]:
    """What `cdsrules release` prints beyond the first line: the proposer and approvals, or the emergency."""
    lines = []
    if entry.proposed_by:
        lines.append(f"  proposed by {entry.proposed_by}")
    for approval in entry.approvals:
        lines.append(f"  approved by {approval.approver} at {approval.approved_at}"
                     + (f": {approval.comment}" if approval.comment else ""))
    if entry.emergency_reason:
        lines.append(f"  EMERGENCY release without the approvals its governance asks for: {entry.emergency_reason}")
    return lines
