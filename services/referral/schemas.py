"""Request and response bodies of the referral API (CONTRACT §6 field names)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from services.referral.domain import MemberKind, RoutingRule, ServiceCode, Urgency
from shared.text import Email, FreeText, Line, Phone, Slug

ServiceName = Annotated[Line, Field(min_length=1, max_length=120)]
Name = Annotated[Line, Field(min_length=1, max_length=200)]
# The length limit inside the type: on `list | None` pydantic applies it to a null too (a TypeError, a 500).
ServiceList = Annotated[list[ServiceName], Field(max_length=50)]
ReferralService = ServiceCode


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Contact(Strict):
    """The institution's contact (an office address or switchboard, not a person's)."""

    email: Email | None = None
    phone: Phone | None = None


class MemberIn(Strict):
    name: Name
    kind: MemberKind
    municipality: Slug
    services: list[ServiceName] = Field(default_factory=list, max_length=50)
    contact: Contact = Field(default_factory=Contact)
    active: bool = True


class MemberPatch(Strict):
    """Only the fields given change; none of them may be null (a null name or kind is 422, not a 500)."""

    # SkipJsonSchema: the schema says what is accepted (no null); the validator refuses an explicit null.
    name: Name | SkipJsonSchema[None] = None
    kind: MemberKind | SkipJsonSchema[None] = None
    services: ServiceList | SkipJsonSchema[None] = None
    contact: Contact | SkipJsonSchema[None] = None
    active: bool | SkipJsonSchema[None] = None

    @field_validator("name", "kind", "services", "contact", "active")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may not be null; leave the field out to keep it")
        return value


class MemberOut(BaseModel):
    id: uuid.UUID
    name: Name
    kind: str
    municipality: str
    services: list[ServiceName]
    contact: Contact
    active: bool


class RoutingRulesBody(Strict):
    rules: list[RoutingRule] = Field(max_length=100)


class RoutingRulesOut(BaseModel):
    municipality: str
    rules: list[RoutingRule]
    is_default: bool


class RoutingDecisionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    trigger: str
    risk_level: str
    kind: str
    rules: list[str]
    urgency: str
    outcome: str = Field(description="referred | escalated | already_referred | no_consent | no_member")
    member_id: uuid.UUID | None
    referral_id: uuid.UUID | None
    legal_exception: str | None
    at: datetime


class CaseRoutingOut(BaseModel):
    case_id: uuid.UUID
    case_number: str
    decisions: list[RoutingDecisionOut]


class ReferralIn(Strict):
    case_id: uuid.UUID
    to_member_id: uuid.UUID
    urgency: Urgency
    service: ReferralService | None = None
    note: FreeText | None = Field(default=None, max_length=4000)
    consent_override_reason: FreeText | None = Field(default=None, min_length=3, max_length=2000)


class ActionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: FreeText | None = Field(default=None, min_length=1, max_length=2000)
    outcome: FreeText | None = Field(default=None, min_length=1, max_length=2000)


class HistoryEntry(BaseModel):
    status: str
    at: datetime
    by: str
    reason: str | None = None  # why the system changed (or kept) it, e.g. `consent_withdrawn`


class ReferralOut(BaseModel):
    id: uuid.UUID
    case_id: uuid.UUID
    case_number: str
    municipality: str
    to_member_id: uuid.UUID
    to_member_kind: str
    service: str | None
    urgency: str
    status: str
    reason: str
    created_at: datetime
    ack_due_at: datetime
    history: list[HistoryEntry]
    # Beyond the contract's list:
    legal_exception: str | None = None
    consent_override: bool = False
    consent_override_reason: str | None = None
    note: str | None = None
    decline_reason: str | None = None
    outcome: str | None = None
    acknowledged_at: datetime | None = None
    sla_breached_at: datetime | None = None


class MeetingIn(Strict):
    municipality: Slug
    kind: Literal["etn", "steering_committee"] = "etn"
    scheduled_for: datetime
    case_ids: list[uuid.UUID] = Field(default_factory=list, max_length=200)
    member_ids: list[uuid.UUID] = Field(default_factory=list, max_length=200)


class MeetingOut(BaseModel):
    id: uuid.UUID
    municipality: str
    kind: str
    scheduled_for: datetime
    case_ids: list[uuid.UUID]
    member_ids: list[uuid.UUID]
    attended_member_ids: list[uuid.UUID]
    held: bool
    minutes_recorded_at: datetime | None


class DecisionIn(Strict):
    case_id: uuid.UUID
    action: FreeText = Field(min_length=1, max_length=2000)
    responsible_member_id: uuid.UUID
    due_date: date


class MinutesIn(Strict):
    attended_member_ids: list[uuid.UUID] = Field(default_factory=list, max_length=200)
    decisions: list[DecisionIn] = Field(default_factory=list, max_length=200)


class PlanActionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    meeting_id: uuid.UUID
    case_id: uuid.UUID
    case_number: str
    action: str
    responsible_member_id: uuid.UUID
    due_date: date
    status: str
    completed_at: datetime | None
    overdue: bool = False


class MinutesOut(BaseModel):
    meeting: MeetingOut
    actions: list[PlanActionOut]


class CasePlanOut(BaseModel):
    case_id: uuid.UUID
    case_number: str
    actions: list[PlanActionOut]


class Dashboard(BaseModel):
    municipality: str
    open_cases_by_risk_level: dict[str, int]
    overdue_referrals: dict[str, Any]
    overdue_plan_actions: dict[str, Any]
    protection_orders_expiring: dict[str, Any]
    # Pairs of cases the intake search found alike that the coordinator has not yet linked or ruled apart.
    possible_duplicates_awaiting_decision: dict[str, int] = Field(default_factory=lambda: {"count": 0})


class ReportSummary(BaseModel):
    """DOMAIN.md "Reports". Every breakdown sums to its total, except `cases.by_violence_type`:
    a case may name several types, so it counts cases per type (a case with two types counts
    under both; a case with none under `unknown`) and its sum can exceed `cases.total`.
    Missing facts count under `unknown` (ethnicity: `undisclosed`). For the `auditor` a count from 1 to
    MKR_REPORTS_MIN_CELL - 1 in a breakdown (and one more beside it) is null, its path in `suppressed`."""

    municipality: str
    from_: date = Field(alias="from")
    to: date
    cases: dict[str, Any]
    referrals: dict[str, Any]
    etn_meetings: int
    steering_committee_meetings: int
    protection_orders: dict[str, int | None]
    shelter: dict[str, int | None]
    rent_bonus: dict[str, Any]
    # The national view (`municipality=*`, auditor): cases per municipality; null otherwise.
    by_municipality: dict[str, int | None] | None = None
    # The auditor's view: paths of the cells shown as null (small-cell suppression, CONTRACT.md §10).
    suppressed: list[str] = Field(default_factory=list)

    model_config = ConfigDict(populate_by_name=True)
