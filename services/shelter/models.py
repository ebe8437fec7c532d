"""Tables of the shelter service (its own database)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

MONEY = sa.Numeric(14, 2)


class ShelterTable(SQLModel, registry=registry()):
    """The base of this service's tables: their own metadata, so table names never clash with
    another service's when several services are imported into one process (tests, the launcher)."""


def _tz() -> Any:
    return sa.DateTime(timezone=True)


class Shelter(ShelterTable, table=True):
    __tablename__ = "shelters"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    municipality: str = Field(index=True)
    name: str
    operator: str
    kind: str
    capacity: int
    free_beds: int
    accepts_children: bool
    # Secret locations: encrypted at rest when shared/crypto.py provides a cipher (see domain.py).
    address: str
    phone: str
    member_id: str | None = None
    version: int = 1
    created_at: datetime = Field(sa_type=_tz())
    updated_at: datetime = Field(sa_type=_tz())


class Placement(ShelterTable, table=True):
    __tablename__ = "placements"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    municipality: str = Field(index=True)
    shelter_id: uuid.UUID = Field(foreign_key="shelters.id", index=True)
    case_id: uuid.UUID = Field(index=True)
    adults: int
    children: int
    planned_until: date
    started_at: datetime = Field(sa_type=_tz())
    ended_at: datetime | None = Field(default=None, sa_type=_tz())
    end_reason: str | None = None
    created_by_sub: str


class CaseProjection(ShelterTable, table=True):
    """What intake's `case.reported`, `case.closed` and `case.reopened` tell us: no identities."""

    __tablename__ = "case_projection"

    case_id: uuid.UUID = Field(primary_key=True)
    case_number: str
    municipality: str
    needs: list[str] = Field(default_factory=list, sa_column=sa.Column(postgresql.JSONB, nullable=False))
    children_count: int | None = None
    closed_at: datetime | None = Field(default=None, sa_type=_tz())


class DirectoryMember(ShelterTable, table=True):
    """Projection of referral's `member.saved`: which directory members exist, of which kind and where,
    so a shelter can name only a real, active shelter member of its own municipality."""

    __tablename__ = "directory_members"

    member_id: str = Field(primary_key=True)
    municipality: str
    kind: str
    active: bool
    saved_at: datetime = Field(sa_type=_tz())


class RentBonusApplication(ShelterTable, table=True):
    __tablename__ = "rent_bonus_applications"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    municipality: str = Field(index=True)
    case_id: uuid.UUID = Field(index=True)
    monthly_rent: Decimal = Field(sa_type=MONEY)
    household_size: int
    requested_months: int
    status: str = "pending"  # pending → approved | rejected
    submitted_by_role: str
    submitted_by_sub: str
    submitted_by_member_id: str | None = None
    submitted_at: datetime = Field(sa_type=_tz())
    decided_at: datetime | None = Field(default=None, sa_type=_tz())
    decided_by_sub: str | None = None
    monthly_amount: Decimal | None = Field(default=None, sa_type=MONEY)
    start_month: date | None = None
    months: int | None = None
    last_month: date | None = None
    decision_reason: str | None = None
    ending_raised_at: datetime | None = Field(default=None, sa_type=_tz())


class RentBonusPayment(ShelterTable, table=True):
    __tablename__ = "rent_bonus_payments"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    application_id: uuid.UUID = Field(foreign_key="rent_bonus_applications.id", index=True)
    municipality: str  # indexed with month (ix_rent_bonus_payments_municipality_month)
    month: date  # the first day of the month paid for; its year is the budget year it commits against
    amount: Decimal = Field(sa_type=MONEY)
    status: str = "due"  # due → paid
    paid_at: datetime | None = Field(default=None, sa_type=_tz())
    paid_by_sub: str | None = None
    due_raised_at: datetime | None = Field(default=None, sa_type=_tz())


class RentBonusBudget(ShelterTable, table=True):
    """A municipality's rent-bonus budget for one calendar year; committed/paid are SUMs of payments."""

    __tablename__ = "rent_bonus_budgets"

    municipality: str = Field(primary_key=True)
    year: int = Field(primary_key=True)
    amount: Decimal = Field(sa_type=MONEY)
    updated_at: datetime = Field(sa_type=_tz())
