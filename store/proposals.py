"""Proposed releases and their reviews: the four-eyes record.

Proposing freezes a draft's bytes (its text and their sha256) with who proposed it, when, and from which date it
is to take effect. A review is an approval or a rejection by one reviewer, of the sha256 they were shown. The
rules that hold whatever page or command writes here:

- nobody reviews their own proposal;
- an approval counts only for exactly the proposed bytes: one of any other sha256 is refused;
- a changed text, or the same text to take effect on another date or for other patients, is a new proposal, and
  the open proposal of the same version it replaces is superseded: approvers approve the terms with the bytes;
- a rejection needs a comment, and closes the proposal.

How many approvals a release needs is the ruleset's own (its manifest's `governance:`), not the store's.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from store.database import Database
from store.tables import proposal, proposal_review
from store.values import iso, now

OPEN, REJECTED, SUPERSEDED, RELEASED = "open", "rejected", "superseded", "released"
APPLIES_TO_ALL = "all"  # whom the release applies to, as its manifest entry records it (engine/versions.py)
APPROVE, REJECT = "approve", "reject"


class ProposalRefused(ValueError):
    """A proposal or review the four-eyes rules do not allow; the message says why."""


@dataclass(frozen=True)
class Review:
    reviewer: str
    reviewed_at: str
    decision: str  # approve | reject
    comment: str
    sha256: str  # of the bytes the reviewer was shown


@dataclass(frozen=True)
class Proposal:
    id: int
    ruleset: str
    version: str
    text: str
    sha256: str
    proposed_by: str
    proposed_at: str
    effective_from: dt.date
    note: str
    status: str
    superseded_by: int | None
    reviews: tuple[Review, ...] = ()
    applies_to: str = APPLIES_TO_ALL  # all | new-therapies

    @property
    def approvals(self) -> list[Review]:
        """The approvals that count: of exactly the proposed bytes (the store refuses any other, this says why)."""
        return [r for r in self.reviews if r.decision == APPROVE and r.sha256 == self.sha256]

    @property
    def rejection(self) -> Review | None:
        return next((r for r in self.reviews if r.decision == REJECT), None)


def text_sha256(text: str) -> str:
    """The sha256 of the bytes the text is written as (UTF-8): the hash its release will record."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Proposals:
    """The proposals in a database, with their reviews."""

    def __init__(self, database: Database) -> None:
        self._engine, self._turn = database.engine, database.turn

    def propose(self, ruleset: str, version: str, text: str, proposed_by: str, effective_from: dt.date | str,
                note: str = "", applies_to: str = APPLIES_TO_ALL) -> Proposal:
        """Freeze `text` as the proposed release of ruleset@version. The same bytes already open, on the same terms
        (effective date, whom it applies to), are that proposal; any other open for the version is superseded by
        this one."""
        if not proposed_by.strip():
            raise ProposalRefused("a proposal needs the person proposing it")
        digest, effective = text_sha256(text), iso(effective_from)
        with self._turn(), self._engine.begin() as connection:
            open_ones = connection.execute(select(
                proposal.c.id, proposal.c.sha256, proposal.c.effective_from, proposal.c.applies_to).where(
                proposal.c.ruleset == ruleset, proposal.c.version == version, proposal.c.status == OPEN)).all()
            same = next((row.id for row in open_ones if (row.sha256, row.effective_from, row.applies_to) == (
                digest, effective, applies_to)), None)
            if same is None:
                same = connection.execute(insert(proposal).values(
                    ruleset=ruleset, version=version, text=text, sha256=digest, proposed_by=proposed_by.strip(),
                    proposed_at=now(), effective_from=effective, note=note.strip(), status=OPEN,
                    applies_to=applies_to,
                )).inserted_primary_key[0]
                replaced = [row.id for row in open_ones]
                if replaced:
                    connection.execute(update(proposal).where(proposal.c.id.in_(replaced)).values(
                        status=SUPERSEDED, superseded_by=same))
        found = self.get(same)
        assert found is not None
        return found

    def review(self, proposal_id: int, reviewer: str, decision: str, comment: str, sha256: str) -> Proposal:
        """Record one reviewer's approval or rejection of the bytes with `sha256`; ProposalRefused says why not."""
        reviewer, comment = reviewer.strip(), comment.strip()
        if decision not in (APPROVE, REJECT):
            raise ProposalRefused(f"a review approves or rejects, not {decision!r}")
        if decision == REJECT and not comment:
            raise ProposalRefused("a rejection needs a comment saying why")
        with self._turn(), self._engine.begin() as connection:
            current = _locked_open(connection, proposal_id)
            if reviewer == current.proposed_by:
                raise ProposalRefused(f"{reviewer} proposed this release and may not review it: four eyes means "
                                      "somebody else")
            if sha256 != current.sha256:
                raise ProposalRefused(f"the text reviewed (sha256 {sha256[:12]}…) is not the text proposed (sha256 "
                                      f"{current.sha256[:12]}…): a changed text needs a new proposal")
            try:  # the refusal leaves the block, so the whole transaction is rolled back
                connection.execute(insert(proposal_review).values(
                    proposal_id=proposal_id, reviewer=reviewer, reviewed_at=now(), decision=decision,
                    comment=comment, sha256=sha256))
            except IntegrityError:
                raise ProposalRefused(f"{reviewer} has already reviewed proposal {proposal_id}") from None
            if decision == REJECT:
                connection.execute(update(proposal).where(proposal.c.id == proposal_id).values(status=REJECTED))
        found = self.get(proposal_id)
        assert found is not None
        return found

    def mark_released(self, proposal_id: int) -> None:
        with self._turn(), self._engine.begin() as connection:
            connection.execute(update(proposal).where(proposal.c.id == proposal_id, proposal.c.status == OPEN)
                               .values(status=RELEASED))

    def get(self, proposal_id: int) -> Proposal | None:
        with self._engine.connect() as connection:
            row = connection.execute(select(proposal).where(proposal.c.id == proposal_id)).first()
            return _proposal(connection, row) if row else None

    def listing(self, ruleset: str | None = None) -> list[Proposal]:
        """Every proposal, newest first, with its reviews."""
        query = select(proposal).order_by(proposal.c.id.desc())
        if ruleset:
            query = query.where(proposal.c.ruleset == ruleset)
        with self._engine.connect() as connection:
            return [_proposal(connection, row) for row in connection.execute(query).all()]

    def open_for(self, ruleset: str, version: str, sha256: str) -> Proposal | None:
        """The open proposal of exactly these bytes of ruleset@version, if any (what a release may rest on)."""
        with self._engine.connect() as connection:
            row = connection.execute(select(proposal).where(
                proposal.c.ruleset == ruleset, proposal.c.version == version, proposal.c.sha256 == sha256,
                proposal.c.status == OPEN).order_by(proposal.c.id.desc())).first()
            return _proposal(connection, row) if row else None


def _locked_open(connection: Connection, proposal_id: int) -> Row:
    """The proposal, if it is open, its row locked for this transaction (an UPDATE that changes nothing takes the
    lock on PostgreSQL; SQLite writers already take turns), so it cannot be superseded or rejected meanwhile."""
    touched = connection.execute(update(proposal).where(proposal.c.id == proposal_id, proposal.c.status == OPEN)
                                 .values(status=OPEN)).rowcount
    row = connection.execute(select(proposal).where(proposal.c.id == proposal_id)).first()
    if row is None:
        raise ProposalRefused(f"there is no proposal {proposal_id}")
    if not touched:
        raise ProposalRefused(f"proposal {proposal_id} is {row.status}: only an open proposal can be reviewed")
    return row


def _proposal(connection: Connection, row: Row) -> Proposal:
    reviews = connection.execute(select(proposal_review).where(proposal_review.c.proposal_id == row.id)
                                 .order_by(proposal_review.c.id)).all()
    return Proposal(row.id, row.ruleset, row.version, row.text, row.sha256, row.proposed_by, row.proposed_at,
                    dt.date.fromisoformat(row.effective_from), row.note, row.status, row.superseded_by,
                    tuple(Review(r.reviewer, r.reviewed_at, r.decision, r.comment, r.sha256) for r in reviews),
                    row.applies_to)
