"""Tables of the referral service (its own database): directory, referrals, meetings, plans, projections."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


class ReferralTable(SQLModel, registry=registry()):
    """Referral's own metadata, like every service's: table names never clash with another service's when several
    services are imported into one process (tests, the permission renderer)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _jsonb(default: Any = None) -> Any:
    return Field(default_factory=default or list, sa_column=sa.Column(postgresql.JSONB, nullable=False))


TZ = sa.DateTime(timezone=True)


class Member(ReferralTable, table=True):
    __tablename__ = "members"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    municipality: str
    name: str
    kind: str
    services: list[str] = _jsonb()
    email: str | None = None
    phone: str | None = None
    active: bool = True
    created_at: datetime = Field(default_factory=_now, sa_type=TZ)
    updated_at: datetime = Field(default_factory=_now, sa_type=TZ)


class RoutingRuleSet(ReferralTable, table=True):
    __tablename__ = "routing_rules"

    municipality: str = Field(primary_key=True)
    rules: list[dict[str, Any]] = _jsonb()
    updated_at: datetime = Field(default_factory=_now, sa_type=TZ)
    updated_by: str


class CaseFact(ReferralTable, table=True):
    """Projection of intake's case events: coded facts only, never identities."""

    __tablename__ = "case_facts"

    case_id: uuid.UUID = Field(primary_key=True)
    case_number: str
    municipality: str  # the municipality the case belongs to now (a transfer moves it, CONTRACT §10)
    # Where it was reported: reports count it there for good (`cases.transferred_out` once it moved).
    reported_municipality: str
    reported_at: datetime = Field(sa_type=TZ)
    status: str = "open"
    closed_at: datetime | None = Field(default=None, sa_type=TZ)
    risk_level: str = "low"
    source: str | None = None
    sex: str | None = None
    age_group: str | None = None
    ethnicity: str | None = None
    disability: bool | None = None
    violence_types: list[str] = _jsonb()
    perpetrator_relationship: str | None = None
    needs: list[str] = _jsonb()
    children_count: int = 0
    consent_share_with: list[str] = _jsonb()
    reported_by_role: str | None = None
    reported_by_member_id: str | None = None
    # The coordinator's duplicate decisions (intake's `case.linked` / `case.unlinked`): a repeat is a case
    # linked to one of the same person reported in the 12 months before it; `pending_duplicates` counts the
    # possible duplicates of this case still awaiting her decision (the dashboard sums them).
    repeat: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    pending_duplicates: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class Referral(ReferralTable, table=True):
    __tablename__ = "referrals"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    case_id: uuid.UUID
    case_number: str
    municipality: str
    to_member_id: uuid.UUID
    to_member_kind: str
    service: str | None = None
    urgency: str
    status: str = "pending"
    reason: str
    origin: str = "auto"  # auto (routing rules) | manual | auto_moved (automatic, ended by a transfer)
    note: str | None = None
    consent_override_reason: str | None = None
    legal_exception: str | None = None
    decline_reason: str | None = None
    outcome: str | None = None
    sender_member_id: str | None = None
    sender_role: str
    created_by: str
    created_at: datetime = Field(default_factory=_now, sa_type=TZ)
    updated_at: datetime = Field(default_factory=_now, sa_type=TZ)
    ack_due_at: datetime = Field(sa_type=TZ)
    acknowledged_at: datetime | None = Field(default=None, sa_type=TZ)
    sla_breached_at: datetime | None = Field(default=None, sa_type=TZ)
    history: list[dict[str, Any]] = _jsonb()


class RoutingDecision(ReferralTable, table=True):
    """Why routing did or did not refer a case to a kind: what GET /v1/cases/{id}/routing shows."""

    __tablename__ = "routing_decisions"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    case_id: uuid.UUID
    municipality: str
    trigger: str  # the event type that caused routing
    event_id: uuid.UUID
    risk_level: str
    kind: str
    rules: list[str] = _jsonb()
    urgency: str
    # referred | escalated | already_referred | no_consent | no_member
    outcome: str
    member_id: uuid.UUID | None = None
    referral_id: uuid.UUID | None = None
    legal_exception: str | None = None
    at: datetime = Field(default_factory=_now, sa_type=TZ)


class ShelterMember(ReferralTable, table=True):
    """Projection of `shelter.availability_changed`: which directory member a shelter is."""

    __tablename__ = "shelter_members"

    shelter_id: uuid.UUID = Field(primary_key=True)
    member_id: uuid.UUID | None = None
    municipality: str


class ProtectionOrder(ReferralTable, table=True):
    __tablename__ = "protection_orders"

    order_id: uuid.UUID = Field(primary_key=True)
    case_id: uuid.UUID
    case_number: str
    municipality: str
    kind: str
    status: str
    issued_at: datetime | None = Field(default=None, sa_type=TZ)
    expires_at: datetime | None = Field(default=None, sa_type=TZ)


class Placement(ReferralTable, table=True):
    __tablename__ = "placements"

    placement_id: uuid.UUID = Field(primary_key=True)
    case_id: uuid.UUID
    municipality: str
    shelter_id: uuid.UUID | None = None
    adults: int = 0
    children: int = 0
    started_at: datetime = Field(sa_type=TZ)
    ended_at: datetime | None = Field(default=None, sa_type=TZ)


class RentBonus(ReferralTable, table=True):
    __tablename__ = "rent_bonuses"

    application_id: uuid.UUID = Field(primary_key=True)
    case_id: uuid.UUID
    municipality: str
    approved: bool
    monthly_amount: Decimal = Field(default=Decimal(0), sa_type=sa.Numeric(14, 2))
    start_month: date | None = None
    months: int = 0


class RentBonusPayment(ReferralTable, table=True):
    __tablename__ = "rent_bonus_payments"

    payment_id: uuid.UUID = Field(primary_key=True)
    application_id: uuid.UUID
    case_id: uuid.UUID
    municipality: str
    month: date
    amount: Decimal = Field(sa_type=sa.Numeric(14, 2))
    paid_at: datetime | None = Field(default=None, sa_type=TZ)


class EtnMeeting(ReferralTable, table=True):
    __tablename__ = "etn_meetings"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    municipality: str
    kind: str = "etn"
    scheduled_for: datetime = Field(sa_type=TZ)
    case_ids: list[str] = _jsonb()
    member_ids: list[str] = _jsonb()
    attended_member_ids: list[str] = _jsonb()
    held: bool = False
    minutes_recorded_at: datetime | None = Field(default=None, sa_type=TZ)
    created_by: str
    created_at: datetime = Field(default_factory=_now, sa_type=TZ)


class PlanAction(ReferralTable, table=True):
    __tablename__ = "plan_actions"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    meeting_id: uuid.UUID
    case_id: uuid.UUID
    case_number: str
    municipality: str
    action: str
    responsible_member_id: uuid.UUID
    due_date: date
    status: str = "open"  # open | completed | cancelled (the case was transferred to another municipality)
    created_at: datetime = Field(default_factory=_now, sa_type=TZ)
    completed_at: datetime | None = Field(default=None, sa_type=TZ)
    completed_by: str | None = None
    overdue_raised_at: datetime | None = Field(default=None, sa_type=TZ)


class CaseTransfer(ReferralTable, table=True):
    """Projection of `case.transferred`: each accepted move of a case (reports' `cases.transferred_in`)."""

    __tablename__ = "case_transfers"

    transfer_id: uuid.UUID = Field(primary_key=True)
    case_id: uuid.UUID
    from_municipality: str
    to_municipality: str
    from_case_number: str
    to_case_number: str
    accepted_at: datetime = Field(sa_type=TZ)


# --- report rollups: kept by statement-level triggers on `case_facts` and `referrals` (migration 0005_h15lp),
# read by services/referral/reports.py for the whole months of a period (the edges are counted from the rows).


class CaseCount(ReferralTable, table=True):
    """Cases per municipality, UTC month of `reported_at`, and cell (`dimension`, `value`): `total/all`,
    `sex/female`, `violence_type/physical`, `closed/yes`, … (the SQL function `case_count_cells`)."""

    __tablename__ = "case_counts"

    municipality: str = Field(primary_key=True)
    month: date = Field(primary_key=True)
    dimension: str = Field(primary_key=True)
    value: str = Field(primary_key=True)
    n: int = Field(sa_type=sa.BigInteger)


class ReferralCount(ReferralTable, table=True):
    """Referrals per municipality, UTC month of `created_at`, member kind and status; SLA breaches among them."""

    __tablename__ = "referral_counts"

    municipality: str = Field(primary_key=True)
    month: date = Field(primary_key=True)
    to_member_kind: str = Field(primary_key=True)
    status: str = Field(primary_key=True)
    n: int = Field(sa_type=sa.BigInteger)
    breaches: int = Field(sa_type=sa.BigInteger)


class ReferralAckBucket(ReferralTable, table=True):
    """Acknowledged referrals per municipality, UTC month of `created_at` and bucket of the time from creation
    to acknowledgement (8 per doubling of the seconds): the exact median is then read from the rows of the
    middle bucket."""

    __tablename__ = "referral_ack_buckets"

    municipality: str = Field(primary_key=True)
    month: date = Field(primary_key=True)
    bucket: int = Field(primary_key=True)
    n: int = Field(sa_type=sa.BigInteger)
