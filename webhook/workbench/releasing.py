"""Release an approved proposal: its frozen bytes become `rules/<id>/<version>.yaml`, the manifest records the
proposer, each approval and the sha256, and the reload marker tells every server instance to load it (each serves
it from its effective date, without a restart).

The release happens the moment a proposal has the approvals its ruleset's governance asks for (one, for a ruleset
without `governance:`: a proposal made in the workbench is never released on its proposer's word alone). It is
made by the approver whose approval completed it, in that request, so nobody has to come back for it; if it is
refused (its tests fail today, a greater version was released meanwhile) the proposal stays open and says why.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from engine.errors import RulesetErrors
from engine.governance import Approval
from engine.sandbox import SandboxEngine
from engine.versions import RELOAD_MARKER, Release, ReleaseRefused, file_sha256, read_governance, read_manifest, release
from store.proposals import OPEN, Proposal, Proposals

LOCK_FILE = ".release.lock"  # one release at a time per ruleset folder, across workers and instances on it


def approvals_required(folder: Path) -> int:
    return max(read_governance(folder).approvals_required, 1)


def release_if_approved(rules_dir: Path, proposals: Proposals, proposal: Proposal,
                        engine: SandboxEngine) -> Release | None:
    """Release the proposal if it has its approvals (None if not yet); ReleaseRefused says why it cannot be. Its
    tests run in the workbench's sandbox child, so that they never hold this process's engine, which answers the
    EHR's calls."""
    folder = rules_dir / proposal.ruleset
    if proposal.status != OPEN or len({a.reviewer for a in proposal.approvals}) < approvals_required(folder):
        return None
    with _locked(folder):
        entry = _release(folder, proposal, engine)
    proposals.mark_released(proposal.id)
    (rules_dir / RELOAD_MARKER).write_text(dt.datetime.now(dt.UTC).isoformat() + "\n", encoding="utf-8")
    return entry


def _release(folder: Path, proposal: Proposal, engine: SandboxEngine) -> Release:
    if proposal.version in read_manifest(folder):  # before writing: a released file is never overwritten
        raise ReleaseRefused(f"{proposal.ruleset}@{proposal.version} is already released; released versions "
                             "never change")
    path = folder / f"{proposal.version}.yaml"
    before = path.read_bytes() if path.exists() else None
    _write(path, proposal.text.encode("utf-8"))
    if file_sha256(path) != proposal.sha256:
        _restore(path, before)
        raise ReleaseRefused(f"{path.name} does not hold the approved bytes after writing them")
    approvals = tuple(Approval(a.reviewer, a.reviewed_at, a.comment) for a in proposal.approvals)
    try:
        return release(path, proposal.effective_from, "", proposal.note, applies_to=proposal.applies_to,
                       proposed_by=proposal.proposed_by, approvals=approvals, engine=engine)
    except RulesetErrors as exc:
        _restore(path, before)
        raise ReleaseRefused(f"{proposal.ruleset}@{proposal.version} does not load: "
                             f"{'; '.join(e.message for e in exc.errors[:3])}") from None
    except ReleaseRefused:
        _restore(path, before)
        raise


def _write(path: Path, data: bytes) -> None:
    """Atomically: a server reloading meanwhile reads the old draft or the new file, never half of one."""
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _restore(path: Path, before: bytes | None) -> None:
    """The draft as it was before a refused release (or no file, if there was none)."""
    if before is None:
        path.unlink(missing_ok=True)
    else:
        _write(path, before)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    with open(folder / LOCK_FILE, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
