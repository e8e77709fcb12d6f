"""The store's tables, as the queries see them.

The schema itself is made by the migrations in store/migrations/versions/; tests/test_store.py checks that the two
agree.
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("service", String(200), nullable=False),
    Column("card", String(200), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("outcome_timestamp", String(64), nullable=False),
    Column("accepted_suggestions", Text),  # JSON list of suggestion uuids
    Column("override_reason", Text),  # JSON: {reason: Coding, userComment}
    Column("received_at", String(40), nullable=False),
    Column("item", Text),  # the item's JSON as it was sent, whatever its keys
    Column("unknown_keys", Text),  # JSON list of the keys it sent that CDS Hooks does not define
    Column("item_sha256", String(64), nullable=False),  # so only the same content is the same feedback
    UniqueConstraint("service", "card", "outcome", "outcome_timestamp", "item_sha256", name="feedback_once"),
    Index("feedback_card", "card"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("decision_id", String(36), nullable=False, unique=True),
    Column("hook_instance", String(200), nullable=False),
    Column("service", String(200), nullable=False),
    Column("hook", String(50), nullable=False),  # as the request named it
    Column("evaluated_hook", String(50)),  # as the engine saw it (medication-prescribe -> order-select)
    Column("patient_id", String(200)),
    Column("evaluation_date", String(10)),  # YYYY-MM-DD
    Column("ruleset", String(200), nullable=False),
    Column("version", String(50), nullable=False),
    Column("manifest_sha256", String(64)),  # sha256 of the version file, as its release recorded it
    Column("facts", Text),  # JSON object; NULL when nothing was evaluated
    Column("missing", Text),  # JSON object: input fact -> why it was not used
    Column("fired_rules", Text, nullable=False),  # JSON list
    Column("decisions", Text, nullable=False),  # JSON list of engine.audit.decision_summary()
    Column("cards", Text, nullable=False),  # JSON list of {uuid, topic}
    Column("latency_ms", Float, nullable=False),
    Column("created_at", String(40), nullable=False, index=True),
    Column("version_choice", Text),  # JSON object: why the version decided (engine.choice); NULL before 0006
)

# One row per card shown, so feedback (which names only the card) joins on the card uuid to topic and rule.
audit_card = Table(
    "audit_card",
    metadata,
    Column("card_uuid", String(200), primary_key=True),
    Column("decision_id", String(36), nullable=False),  # no index: a decision's cards are in its audit row
    Column("service", String(200), nullable=False),
    Column("ruleset", String(200), nullable=False),
    Column("version", String(50), nullable=False),
    Column("topic", String(200), nullable=False),
    Column("rule_id", String(200)),
    Column("created_at", String(40), nullable=False, index=True),
)

seen_jti = Table(
    "jti",
    metadata,
    Column("issuer", String(500), nullable=False),
    Column("jti_sha256", String(64), nullable=False),  # the token's jti may be of any length; its digest is not
    Column("expires_at", BigInteger, nullable=False, index=True),  # 64 bits: tokens outlive 2038
    PrimaryKeyConstraint("issuer", "jti_sha256"),
)

# Ruleset drafts saved from the workbench: each save is a row (its revision), so an earlier text is never lost;
# the draft of a version is its latest revision. Never served: the service reads rules from the rules folder only.
drafts = Table(
    "drafts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ruleset", String(200), nullable=False),
    Column("version", String(50), nullable=False),
    Column("revision", Integer, nullable=False),  # 1, 2, ... per (ruleset, version)
    Column("text", Text, nullable=False),
    Column("text_sha256", String(64), nullable=False),
    Column("author", String(200)),  # the workbench user, when known
    Column("saved_at", String(40), nullable=False),  # UTC, ISO 8601
    UniqueConstraint("ruleset", "version", "revision", name="draft_revision_once"),
)

# A proposed release: the draft's bytes frozen as they were proposed, so an approval is of exactly these bytes.
proposal = Table(
    "proposal",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ruleset", String(200), nullable=False),
    Column("version", String(50), nullable=False),
    Column("text", Text, nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
    Column("proposed_by", String(200), nullable=False),
    Column("proposed_at", String(40), nullable=False),
    Column("effective_from", String(10), nullable=False),  # YYYY-MM-DD
    Column("note", Text, nullable=False),
    Column("status", String(20), nullable=False),  # open | rejected | superseded | released
    Column("superseded_by", Integer),  # the proposal of a changed text that replaced this one
    Column("applies_to", String(20), nullable=False, server_default="all"),  # all | new-therapies (0008)
    Index("proposal_version", "ruleset", "version"),
)

# An approval or rejection of one proposal, by one reviewer, of the bytes they were shown (their sha256).
proposal_review = Table(
    "proposal_review",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("proposal_id", Integer, nullable=False),
    Column("reviewer", String(200), nullable=False),
    Column("reviewed_at", String(40), nullable=False),
    Column("decision", String(10), nullable=False),  # approve | reject
    Column("comment", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    UniqueConstraint("proposal_id", "reviewer", name="proposal_review_once"),
)
