"""Four eyes on a release: what a ruleset's governance asks (`governance:` in `rules/<id>/releases.yaml`) and
whether a release's approvals meet it.

The approvals come from whoever holds them (the workbench's store, or the command line reading it); this module
only counts them, so the rule that nobody approves their own proposal holds however a release is made. A ruleset
without `governance:` is released as before, on the word of `--approved-by`.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Approval:
    """One approver's approval of exactly the released bytes."""

    approver: str
    approved_at: str
    comment: str = ""

    def as_dict(self) -> dict[str, str]:
        data = {"approver": self.approver, "approved_at": self.approved_at}
        if self.comment:
            data["comment"] = self.comment
        return data


@dataclass(frozen=True)
class Governance:
    approvals_required: int = 0  # 0: no governance, a release needs only `approved_by`

    @property
    def configured(self) -> bool:
        return self.approvals_required > 0

    def as_dict(self) -> dict[str, int]:
        return {"approvals_required": self.approvals_required}


def governance_from(data: object) -> Governance:
    """The manifest's `governance:` mapping (already checked by the schema), or no governance."""
    if not isinstance(data, dict):
        return Governance()
    return Governance(int(data.get("approvals_required", 0)))


def shortfall(governance: Governance, proposed_by: str, approvals: Iterable[Approval]) -> str | None:
    """Why these approvals do not allow the release, or None when they do. Only distinct approvers other than the
    proposer count: nobody approves their own proposal, and one person approving twice is still one pair of eyes."""
    if not governance.configured:
        return None
    if not proposed_by.strip():
        return "this ruleset's governance needs a proposal: who proposed the release is not known"
    approvers = {a.approver for a in approvals}
    if proposed_by in approvers:
        return f"{proposed_by} proposed this release and may not approve it"
    if len(approvers) < governance.approvals_required:
        return (f"this ruleset's governance needs {governance.approvals_required} approval(s) by someone other than "
                f"the proposer; {len(approvers)} recorded")
    return None
