"""`cdsrules release` under four eyes: a ruleset whose manifest names its governance is released from the command
line only on an approved proposal of exactly the file's bytes, read from the workbench's store (`--db`), or as an
emergency whose reason the manifest records (`--emergency-reason`).

A ruleset without governance is released as before, on the word of `--approved-by`.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from cdsrules.audit import open_store
from engine import versions
from engine.governance import Approval
from engine.loader import load_ruleset


def release_file(file: str | Path, effective_from: dt.date | None, approved_by: str, note: str, db_url: str | None,
                 emergency_reason: str) -> versions.Release:
    """Release the file as its ruleset's governance allows; versions.ReleaseRefused says why not."""
    file = Path(file)
    folder = file.parent
    governance = versions.read_governance(folder)
    if not governance.configured or emergency_reason.strip():
        if governance.configured and not approved_by.strip():
            raise versions.ReleaseRefused("an emergency release needs --approved-by: who decided it")
        return versions.release(file, _needed(effective_from), approved_by, note, emergency_reason=emergency_reason)
    if not db_url:
        raise versions.ReleaseRefused(
            f"{folder.name} is released under four eyes ({versions.MANIFEST} names its governance: "
            f"{governance.approvals_required} approval(s)): give --db URL, the workbench's store holding the "
            "approved proposal of this file, or --emergency-reason")
    ruleset = load_ruleset(file)
    sha256 = versions.file_sha256(file)
    store = open_store(db_url)
    proposal = store.proposals.open_for(folder.name, ruleset.version, sha256)
    if proposal is None:
        raise versions.ReleaseRefused(
            f"the store holds no open proposal of {ruleset.ref} with this file's sha256 {sha256[:12]}…: propose "
            "exactly this text in the workbench and have it approved")
    approvals = tuple(Approval(a.reviewer, a.reviewed_at, a.comment) for a in proposal.approvals)
    entry = versions.release(file, effective_from or proposal.effective_from, approved_by, note or proposal.note,
                             proposed_by=proposal.proposed_by, approvals=approvals)
    store.proposals.mark_released(proposal.id)
    return entry


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
