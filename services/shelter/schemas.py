"""Request and response bodies of the shelter service (CONTRACT §7 field names)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from services.shelter import domain

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{1,62}$")]
Month = Annotated[str, StringConstraints(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]
# Lek, two decimals, strictly positive; serialized as a decimal string.
Money = Annotated[
    Decimal, Field(gt=0, max_digits=14, decimal_places=2), AfterValidator(lambda d: d.quantize(Decimal("0.01")))
]
Beds = Annotated[int, Field(ge=0, le=10_000)]


class ShelterKind(StrEnum):
    emergency = "emergency"
    national_centre = "national_centre"
    crisis_centre = "crisis_centre"
    transit = "transit"


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShelterCreate(Body):
    name: Text
    operator: Text
    kind: ShelterKind
    municipality: Slug
    capacity: Annotated[int, Field(ge=1, le=10_000)]
    accepts_children: bool
    address: LongText
    phone: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=40)]
    member_id: Text | None = None
    # Optional: beds free right now; defaults to the whole capacity.
    free_beds: Beds | None = None


class ShelterOut(BaseModel):
    """`address` and `phone` are present only for the coordinator and the shelter's own staff."""

    id: uuid.UUID
    name: str
    operator: str
    kind: str
    municipality: str
    capacity: int
    free_beds: int
    accepts_children: bool
    member_id: str | None
    version: int
    updated_at: datetime
    address: str | None = None
    phone: str | None = None


class AvailabilityUpdate(Body):
    free_beds: Beds


class PlacementCreate(Body):
    case_id: uuid.UUID
    shelter_id: uuid.UUID
    adults: Annotated[int, Field(ge=0, le=100)] = 1
    children: Annotated[int, Field(ge=0, le=100)] = 0
    planned_until: date


class Discharge(Body):
    reason: LongText


class PlacementOut(BaseModel):
    """A placement as shelter staff and the coordinator see it: counts and needs, never names."""

    id: uuid.UUID
    case_id: uuid.UUID
    case_number: str | None
    needs: list[str]
    shelter_id: uuid.UUID
    municipality: str
    adults: int
    children: int
    planned_until: date
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    active: bool


class ApplicationCreate(Body):
    case_id: uuid.UUID
    municipality: Slug
    monthly_rent: Money
    household_size: Annotated[int, Field(ge=1, le=50)]
    requested_months: Annotated[int, Field(ge=1, le=domain.MAX_MONTHS)]


class Decision(Body):
    approved: bool
    monthly_amount: Money | None = None
    start_month: Month | None = None
    months: Annotated[int, Field(ge=1, le=domain.MAX_MONTHS)] | None = None
    reason: LongText | None = None

    @field_validator("start_month")
    @classmethod
    def _month_exists(cls, value: str | None) -> str | None:
        if value is not None:
            domain.parse_month(value)
        return value


class PaymentOut(BaseModel):
    id: uuid.UUID
    month: str
    amount: Decimal
    status: str
    paid_at: datetime | None = None


class ApplicationOut(BaseModel):
    id: uuid.UUID
    case_id: uuid.UUID
    case_number: str | None
    municipality: str
    monthly_rent: Decimal
    household_size: int
    requested_months: int
    status: str
    submitted_at: datetime
    decided_at: datetime | None
    approved: bool | None
    monthly_amount: Decimal | None
    start_month: str | None
    months: int | None
    total: Decimal | None
    reason: str | None
    payments: list[PaymentOut]


class BudgetIn(Body):
    amount: Money


class BudgetOut(BaseModel):
    municipality: str
    year: int
    amount: Decimal
    committed: Decimal
    paid: Decimal
    remaining: Decimal
