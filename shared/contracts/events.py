"""What each topic may carry: its producer (`source`), its event types and the shape of their data.

A consumer checks every envelope against this before applying it (shared/events.py): a type no
service publishes, a type on another service's topic, a `source` that is not the topic's service
or data without the fields (and types) consumers rely on is rejected — recorded, counted, never
applied and never retried. So a service that can write only its own topic (broker ACLs) cannot
pass itself off as another, and a broken producer cannot push half-formed facts into projections.

The models require what consumers read and type what they would otherwise trust blindly (ids,
levels, counts, dates); further fields are allowed, so a producer may add one without breaking
its consumers. A new event type is added here, next to its topic, in the same change that first
publishes it (tests/shared/test_contracts.py finds every type the services publish).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

# The contract's topics (CONTRACT §9) and the one service allowed to publish on each.
TOPIC_SOURCES: Mapping[str, str] = {
    "mkr.intake.events": "mkr/intake",
    "mkr.referral.events": "mkr/referral",
    "mkr.shelter.events": "mkr/shelter",
    "mkr.notifications.events": "mkr/notifications",
}

# Why an event was rejected: the only values of the `reason` label and of the recorded status.
REJECTION_REASONS = ("malformed", "unknown_topic", "unknown_type", "wrong_topic", "forged_source", "invalid_data")

RiskLevel = Literal["low", "medium", "high"]
Text = Annotated[str, StringConstraints(min_length=1, max_length=200)]
CaseNumber = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Month = Annotated[str, StringConstraints(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]
Count = Annotated[int, Field(ge=0, le=100_000)]
Codes = Annotated[list[Text], Field(max_length=100)]


class EventData(BaseModel):
    """The data of an event: what consumers rely on is required and typed; more fields may follow."""

    model_config = ConfigDict(extra="allow", frozen=True)


class CaseEventData(EventData):
    case_id: uuid.UUID
    case_number: CaseNumber


# --- mkr.intake.events ------------------------------------------------------------------------------


class CaseReported(CaseEventData):
    risk_level: RiskLevel
    reported_at: datetime | None = None
    needs: Codes = []
    violence_types: Codes = []
    children_count: Count | None = None
    children_ages: Annotated[list[Annotated[int, Field(ge=0, le=120)]], Field(max_length=100)] = []
    consent_share_with: Codes = []
    reported_by_role: Text | None = None
    reported_by_member_id: Text | None = None


class CaseRiskAssessed(CaseEventData):
    risk_level: RiskLevel
    previous_risk_level: RiskLevel | None = None


class RiskReviewRequested(CaseEventData):
    risk_level: RiskLevel
    proposed_risk_level: RiskLevel
    assessed_by_role: Text


class ProtectionOrderRecorded(CaseEventData):
    order_id: uuid.UUID
    kind: Text
    status: Text | None = None
    issued_at: datetime | None = None
    expires_at: datetime | None = None


class ConsentChanged(CaseEventData):
    share_with: Codes
    withdrawn: Codes = []


class CaseClosed(CaseEventData):
    closed_at: datetime | None = None


class CaseReopened(CaseEventData):
    pass


Municipality = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{1,62}$")]


class TransferEventData(CaseEventData):
    """A transfer between municipalities (CONTRACT §10): coded facts only, never the reason's text."""

    transfer_id: uuid.UUID
    from_municipality: Municipality
    to_municipality: Municipality
    risk_level: RiskLevel | None = None


class TransferRequested(TransferEventData):
    requested_at: datetime


class CaseTransferred(TransferEventData):
    previous_case_number: CaseNumber
    accepted_at: datetime
    needs: Codes = []
    violence_types: Codes = []
    children_count: Count | None = None
    consent_share_with: Codes = []


class TransferDeclined(TransferEventData):
    declined_at: datetime


class CaseAnonymised(CaseEventData):
    """The case's identity and free text are erased (a lawful request, or retention after closure)."""

    cause: Literal["request", "retention"]
    erased_at: datetime | None = None


# --- mkr.referral.events ----------------------------------------------------------------------------


class MemberSaved(EventData):
    member_id: uuid.UUID
    kind: Text
    services: Codes = []
    active: bool = True


class ReferralEventData(CaseEventData):
    referral_id: uuid.UUID
    to_member_id: Text  # compared with the `member_id` claim of tokens, which is the identity provider's text
    to_member_kind: Text


class ReferralCreated(ReferralEventData):
    status: Text
    urgency: Text


class ReferralStatusChanged(ReferralEventData):
    previous_status: Text
    status: Text


class ReferralSlaBreached(ReferralEventData):
    urgency: Text


class MechanismGap(CaseEventData):
    missing_kind: Text


class MeetingScheduled(EventData):
    meeting_id: uuid.UUID
    kind: Text
    scheduled_for: datetime
    case_ids: Annotated[list[uuid.UUID], Field(max_length=1000)] = []
    member_ids: Annotated[list[Text], Field(max_length=1000)] = []


class PlanActionData(EventData):
    action_id: uuid.UUID
    case_id: uuid.UUID
    case_number: CaseNumber
    responsible_member_id: Text
    due_date: date


class MinutesRecorded(EventData):
    meeting_id: uuid.UUID
    actions: Annotated[list[PlanActionData], Field(max_length=1000)] = []


class PlanActionOverdue(PlanActionData):
    pass


# --- mkr.shelter.events -----------------------------------------------------------------------------


class ShelterAvailability(EventData):
    shelter_id: uuid.UUID
    member_id: Text | None = None
    capacity: Count
    free_beds: Count


class PlacementEventData(EventData):
    placement_id: uuid.UUID
    case_id: uuid.UUID
    case_number: CaseNumber | None = None
    shelter_id: uuid.UUID
    adults: Count = 0
    children: Count = 0


class RentBonusDecided(EventData):
    application_id: uuid.UUID
    case_id: uuid.UUID
    case_number: CaseNumber | None = None
    approved: bool
    months: Count | None = None
    start_month: Month | None = None


class RentBonusPayment(EventData):
    application_id: uuid.UUID
    payment_id: uuid.UUID
    case_id: uuid.UUID
    case_number: CaseNumber | None = None
    month: Month
    amount: Annotated[str, StringConstraints(pattern=r"^\d{1,12}(\.\d{1,2})?$")] | None = None


class RentBonusEnding(EventData):
    application_id: uuid.UUID
    case_id: uuid.UUID
    case_number: CaseNumber | None = None
    last_month: Month


# --- mkr.notifications.events -----------------------------------------------------------------------


class ProtectionOrderExpiring(CaseEventData):
    order_id: uuid.UUID
    kind: Text
    expires_at: datetime


class NoFreeBed(EventData):
    free_beds: Count


class TransferOverdue(TransferEventData):
    requested_at: datetime
    hours: Count


class NotificationFailed(EventData):
    delivery_id: uuid.UUID
    subscription_id: uuid.UUID | None = None
    event_id: uuid.UUID
    event_type: Text
    channel: Text
    attempts: Count


# Every event type: the topic it travels on and the model of its data.
EVENT_TYPES: Mapping[str, tuple[str, type[EventData]]] = {
    "case.reported": ("mkr.intake.events", CaseReported),
    "case.risk_assessed": ("mkr.intake.events", CaseRiskAssessed),
    "case.risk_review_requested": ("mkr.intake.events", RiskReviewRequested),
    "case.protection_order_recorded": ("mkr.intake.events", ProtectionOrderRecorded),
    "case.consent_changed": ("mkr.intake.events", ConsentChanged),
    "case.closed": ("mkr.intake.events", CaseClosed),
    "case.reopened": ("mkr.intake.events", CaseReopened),
    "case.transfer_requested": ("mkr.intake.events", TransferRequested),
    "case.transferred": ("mkr.intake.events", CaseTransferred),
    "case.transfer_declined": ("mkr.intake.events", TransferDeclined),
    "case.anonymised": ("mkr.intake.events", CaseAnonymised),
    "member.saved": ("mkr.referral.events", MemberSaved),
    "referral.created": ("mkr.referral.events", ReferralCreated),
    "referral.status_changed": ("mkr.referral.events", ReferralStatusChanged),
    "referral.sla_breached": ("mkr.referral.events", ReferralSlaBreached),
    "mechanism.gap": ("mkr.referral.events", MechanismGap),
    "etn.meeting_scheduled": ("mkr.referral.events", MeetingScheduled),
    "etn.minutes_recorded": ("mkr.referral.events", MinutesRecorded),
    "plan.action_overdue": ("mkr.referral.events", PlanActionOverdue),
    "shelter.availability_changed": ("mkr.shelter.events", ShelterAvailability),
    "shelter.full": ("mkr.shelter.events", ShelterAvailability),
    "placement.started": ("mkr.shelter.events", PlacementEventData),
    "placement.ended": ("mkr.shelter.events", PlacementEventData),
    "rent_bonus.decided": ("mkr.shelter.events", RentBonusDecided),
    "rent_bonus.payment_due": ("mkr.shelter.events", RentBonusPayment),
    "rent_bonus.payment_paid": ("mkr.shelter.events", RentBonusPayment),
    "rent_bonus.ending": ("mkr.shelter.events", RentBonusEnding),
    "case.protection_order_expiring": ("mkr.notifications.events", ProtectionOrderExpiring),
    "shelter.none_available": ("mkr.notifications.events", NoFreeBed),
    "case.transfer_overdue": ("mkr.notifications.events", TransferOverdue),
    "notification.failed": ("mkr.notifications.events", NotificationFailed),
}


class EventRejected(Exception):
    """An event that must not be applied; `reason` is one of REJECTION_REASONS."""

    def __init__(self, reason: str) -> None:
        assert reason in REJECTION_REASONS, reason
        super().__init__(reason)
        self.reason = reason


class _Envelope(BaseModel):
    """What check() reads of an envelope (shared.events.Envelope, already parsed)."""

    model_config = ConfigDict(extra="ignore")

    type: str
    source: str
    subject: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    municipality: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
    data: dict[str, Any]


@dataclass(frozen=True)
class EventContracts:
    """The contract as one consumer sees it: physical topic names (with MKR_KAFKA_TOPIC_PREFIX)."""

    topic_prefix: str = ""

    def logical_topic(self, topic: str) -> str | None:
        if not topic.startswith(self.topic_prefix):
            return None
        name = topic[len(self.topic_prefix) :]
        return name if name in TOPIC_SOURCES else None

    def check(self, topic: str, envelope: Any) -> None:
        """Raise EventRejected unless the envelope may be applied by a consumer of `topic`."""
        logical = self.logical_topic(topic)
        if logical is None:
            raise EventRejected("unknown_topic")
        try:
            head = _Envelope.model_validate(envelope, from_attributes=True)
        except ValidationError:
            raise EventRejected("malformed") from None
        known = EVENT_TYPES.get(head.type)
        if known is None:
            raise EventRejected("unknown_type")
        home, model = known
        if home != logical:
            raise EventRejected("wrong_topic")
        if head.source != TOPIC_SOURCES[logical]:
            raise EventRejected("forged_source")
        try:
            model.model_validate(head.data)
        except ValidationError:
            raise EventRejected("invalid_data") from None


def contracts_for(topic_prefix: str) -> EventContracts:
    return EventContracts(topic_prefix=topic_prefix)


__all__ = ["EVENT_TYPES", "REJECTION_REASONS", "TOPIC_SOURCES", "EventContracts", "EventRejected", "contracts_for"]
