"""Tables of the intake service (its own database).

Personal data (names, phone, address, date of birth, narrative, closing reason) is held only as
AES-GCM ciphertext (`Case.personal`, `Case.close_reason`); coded facts live in `facts`. Name search
uses `survivor_index`: keyed trigrams, never names.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

TZ = sa.DateTime(timezone=True)


class IntakeTable(SQLModel, registry=registry()):
    """Intake's own metadata: services run in one process in tests and share table names."""


class Case(IntakeTable, table=True):
    __tablename__ = "cases"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    municipality: str  # indexed by ix_cases_municipality_page (municipality, reported_at, id), see the migration
    case_number: str  # unique with municipality (see the migration)
    status: str = "open"
    risk_level: str = "low"
    source: str
    # Coded facts only: sex, age, age_group, ethnicity, disability, children, incident codes, needs.
    facts: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(postgresql.JSONB, nullable=False))
    personal: str  # ciphertext of a JSON object (shared.crypto), bound to the case id
    reported_at: datetime = Field(sa_type=TZ)
    reported_by_sub: str
    reported_by_role: str
    reported_by_member_id: str | None = None
    closed_at: datetime | None = Field(default=None, sa_type=TZ)
    close_reason: str | None = None  # ciphertext
    created_at: datetime = Field(sa_type=TZ)
    # Erased (on request or by retention): the data key is destroyed, `personal` holds no ciphertext.
    erased_at: datetime | None = Field(default=None, sa_type=TZ)
    erasure_reason: str | None = None  # sealed under the master key (the case's own key is gone)


class IdentityCorrection(IntakeTable, table=True):
    """One correction of a survivor's identity fields (PATCH /v1/cases/{id}/survivor): who, when, which
    fields; the values before are sealed under the case's own key (so erasure shreds them too)."""

    __tablename__ = "identity_corrections"

    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, sa.Identity(), primary_key=True))
    case_id: uuid.UUID = Field(foreign_key="cases.id", index=True)
    at: datetime = Field(sa_type=TZ)
    sub: str
    role: str
    fields: list[str] = Field(sa_column=sa.Column(postgresql.JSONB, nullable=False))
    previous: str | None = None  # ciphertext of a JSON object; None once the case is erased


class CaseCounter(IntakeTable, table=True):
    __tablename__ = "case_counters"

    municipality: str = Field(primary_key=True)
    year: int = Field(primary_key=True)
    last_seq: int


class SurvivorIndex(IntakeTable, table=True):
    """The searchable index of a case's survivor: HMAC-keyed name trigrams and the birth year."""

    __tablename__ = "survivor_index"

    case_id: uuid.UUID = Field(primary_key=True, foreign_key="cases.id")
    municipality: str
    name_keys: list[str] = Field(sa_column=sa.Column(postgresql.ARRAY(sa.Text), nullable=False))
    # The same keys as sorted distinct 32-bit codes, computed by PostgreSQL (never written): what the searches
    # compare, with intarray (migration 0012_h16codes_name_codes).
    name_codes: list[int] | None = Field(
        default=None,
        sa_column=sa.Column(
            postgresql.ARRAY(sa.Integer), sa.Computed("survivor_key_codes(name_keys)", persisted=True), nullable=False
        ),
    )
    birth_year: int | None = None
    birth_date_key: str | None = None  # keyed hash of the exact date of birth, compared for equality only
    # Fingerprint of the index key the row was written under (SearchIndexer.key_id); NULL: before key ids
    # (the key then in force). `mkr reindex` rewrites the rows not under the current MKR_INDEX_KEY.
    key_id: str | None = None


class RiskAssessment(IntakeTable, table=True):
    __tablename__ = "risk_assessments"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    case_id: uuid.UUID = Field(foreign_key="cases.id", index=True)
    answers: dict[str, bool] = Field(sa_column=sa.Column(postgresql.JSONB, nullable=False))
    yes_count: int
    red_flags: list[str] = Field(sa_column=sa.Column(postgresql.JSONB, nullable=False))
    computed_level: str
    professional_judgement: str | None = None
    risk_level: str
    assessed_at: datetime = Field(sa_type=TZ)
    assessed_by_sub: str
    assessed_by_role: str


class ProtectionOrder(IntakeTable, table=True):
    __tablename__ = "protection_orders"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    case_id: uuid.UUID = Field(foreign_key="cases.id", index=True)
    kind: str
    status: str
    issued_at: datetime | None = Field(default=None, sa_type=TZ)
    expires_at: datetime | None = Field(default=None, sa_type=TZ)
    court: str | None = None
    reference: str | None = None
    recorded_at: datetime = Field(sa_type=TZ)
    recorded_by_sub: str
    recorded_by_role: str


class ConsentRecord(IntakeTable, table=True):
    """Append-only: each grant or withdrawal for one recipient kind; the latest per kind holds."""

    __tablename__ = "consent_records"

    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, sa.Identity(), primary_key=True))
    case_id: uuid.UUID = Field(foreign_key="cases.id", index=True)
    kind: str
    given: bool
    at: datetime = Field(sa_type=TZ)
    recorded_by_sub: str
    recorded_by_role: str


class ReferralAccess(IntakeTable, table=True):
    """A referral of a case to an institution, with its latest status (from `referral.created` and
    `referral.status_changed`): the institution may read the case while one of its referrals is
    pending, acknowledged, accepted or completed (CONTRACT §2). `stage` only moves forward."""

    __tablename__ = "referral_access"

    referral_id: uuid.UUID = Field(primary_key=True)
    case_id: uuid.UUID
    member_id: str
    status: str
    stage: int = Field(sa_type=sa.SmallInteger)
    updated_at: datetime = Field(sa_type=TZ)


class RiskScreenConfig(IntakeTable, table=True):
    __tablename__ = "risk_screen_configs"

    municipality: str = Field(primary_key=True)
    questions: list[dict[str, Any]] = Field(sa_column=sa.Column(postgresql.JSONB, nullable=False))
    high_yes_count: int
    medium_yes_count: int
    updated_at: datetime = Field(sa_type=TZ)
    updated_by_sub: str
    escalation_cases: int = Field(default=3, sa_column_kwargs={"server_default": "3"})
    escalation_window_days: int = Field(default=365, sa_column_kwargs={"server_default": "365"})


class DuplicateCandidate(IntakeTable, table=True):
    """An earlier case the duplicate search found alike when `case_id` was reported: awaiting the
    coordinator's decision until a `case_links` row names the pair."""

    __tablename__ = "duplicate_candidates"

    case_id: uuid.UUID = Field(primary_key=True, foreign_key="cases.id")
    other_id: uuid.UUID = Field(primary_key=True, foreign_key="cases.id", index=True)
    municipality: str
    score: float
    found_at: datetime = Field(sa_type=TZ)


class CaseLink(IntakeTable, table=True):
    """The coordinator's decision on a pair of cases (`low_id` < `high_id`): `same_person` or
    `not_same_person`. Deleting the row undoes the decision (the audit trail keeps both)."""

    __tablename__ = "case_links"

    low_id: uuid.UUID = Field(primary_key=True, foreign_key="cases.id")
    high_id: uuid.UUID = Field(primary_key=True, foreign_key="cases.id", index=True)
    municipality: str
    relation: str
    decided_at: datetime = Field(sa_type=TZ)
    decided_by_sub: str


class AuditEntry(IntakeTable, table=True):
    """Append-only (a trigger refuses UPDATE, DELETE and TRUNCATE) and hash-chained: a BEFORE INSERT
    trigger sets `seq` and `hash` (migration 0005access; `services/intake/audit.py` verifies)."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, sa.Identity(), primary_key=True))
    at: datetime = Field(sa_type=TZ)
    case_id: uuid.UUID | None = None  # empty for a 403 that names no case; indexed with id (ix_audit_log_case_id)
    municipality: str
    sub: str
    role: str
    action: str
    # None until the trigger sets them; NOT NULL in the table (the trigger runs before the check).
    seq: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=False))
    hash: str | None = Field(default=None, nullable=False)


class CaseTransfer(IntakeTable, table=True):
    """A request to move a case to another municipality (CONTRACT §10) and its outcome.

    At most one `pending` per case (a partial unique index). The reasons are ciphertext (shared.crypto),
    bound to the transfer id; the case numbers on both sides are kept (`previous_case_numbers`)."""

    __tablename__ = "case_transfers"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    case_id: uuid.UUID = Field(foreign_key="cases.id", index=True)
    from_municipality: str
    to_municipality: str
    status: str = "pending"  # pending → accepted | declined
    reason: str  # ciphertext
    consent_given_at: datetime = Field(sa_type=TZ)
    from_case_number: str
    to_case_number: str | None = None
    requested_at: datetime = Field(sa_type=TZ)
    requested_by_sub: str
    decided_at: datetime | None = Field(default=None, sa_type=TZ)
    decided_by_sub: str | None = None
    decline_reason: str | None = None  # ciphertext
