"""What each topic may carry: its producer (`source`), its event types and the shape of their data.

One model per event type. Producers build the model and publish it (`shared.events.emit`: the type,
topic and `source` come from here, never spelled in a service); consumers receive it validated, through
their registry `{model: handler}` (`shared.dispatch.EventHandlers`). A consumer checks every envelope
against this before applying it (shared/events.py): a type no service publishes, a type on another
service's topic, a `source` that is not the topic's service or data without the fields (and types)
consumers rely on is rejected — recorded, counted, never applied and never retried. So a service that
can write only its own topic (broker ACLs) cannot pass itself off as another, and a broken producer
cannot push half-formed facts into projections.

The models require what consumers read and type what they would otherwise trust blindly (ids,
levels, counts, instants); further fields are allowed, so a producer may add one without breaking
its consumers. A new event type: one model here, next to its topic, and one line in EVENT_TYPES, in
the same change that first publishes it (docs/asyncapi.yaml is generated from them).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from shared.contracts.instant import Instant
from shared.vocab import AgeGroup, MemberKind, RiskLevel, Sex

INTAKE_TOPIC = "mkr.intake.events"
REFERRAL_TOPIC = "mkr.referral.events"
SHELTER_TOPIC = "mkr.shelter.events"
NOTIFICATIONS_TOPIC = "mkr.notifications.events"

# The contract's topics (CONTRACT §9) and the one service allowed to publish on each.
TOPIC_SOURCES: Mapping[str, str] = {
    INTAKE_TOPIC: "mkr/intake",
    REFERRAL_TOPIC: "mkr/referral",
    SHELTER_TOPIC: "mkr/shelter",
    NOTIFICATIONS_TOPIC: "mkr/notifications",
}

ALL_TOPICS: tuple[str, ...] = tuple(TOPIC_SOURCES)
# The envelope's `schemaversion`: raised when the data of an event type changes incompatibly.
SCHEMA_VERSION = 1

# Why an event was rejected: the only values of the `reason` label and of the recorded status.
REJECTION_REASONS = ("malformed", "unknown_topic", "unknown_type", "wrong_topic", "forged_source", "invalid_data")

Text = Annotated[str, StringConstraints(min_length=1, max_length=200)]
# A producer's informational text (an institution's name or address, a list of service codes): bounded.
Info = Annotated[str, StringConstraints(max_length=1000)]
CaseNumber = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Month = Annotated[str, StringConstraints(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]
Money = Annotated[str, StringConstraints(pattern=r"^\d{1,12}(\.\d{1,2})?$")]
Count = Annotated[int, Field(ge=0, le=100_000)]
Codes = Annotated[list[Text], Field(max_length=100)]
Kinds = Annotated[list[MemberKind], Field(max_length=100)]


class EventData(BaseModel):
    """The data of an event: what consumers rely on is required and typed; more fields may follow.

    `TYPE` and `TOPIC` are set from EVENT_TYPES (below) on every model that is an event type.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    TYPE: ClassVar[str]
    TOPIC: ClassVar[str]


class CaseEventData(EventData):
    case_id: uuid.UUID
    case_number: CaseNumber


# --- mkr.intake.events ------------------------------------------------------------------------------


class CaseReported(CaseEventData):
    """A case was reported: its coded facts (no identities), what routing and reports need."""

    risk_level: RiskLevel
    reported_at: Instant | None = None
    source: Text | None = None  # who reported (a code: police, hotline, ...), not the envelope's source
    sex: Sex | None = None
    age_group: AgeGroup | None = None
    ethnicity: Text | None = None
    disability: bool | None = None
    violence_types: Codes = []
    perpetrator_relationship: Text | None = None
    needs: Codes = []
    children_count: Count | None = None
    children_ages: Annotated[list[Annotated[int, Field(ge=0, le=120)]], Field(max_length=100)] = []
    consent_share_with: Kinds = []
    reported_by_role: Text | None = None
    reported_by_member_id: Text | None = None
    pending_duplicates: Count = 0  # possible duplicates found, awaiting the coordinator's decision


class CaseRiskAssessed(CaseEventData):
    """A risk assessment changed the case's risk level."""

    risk_level: RiskLevel
    previous_risk_level: RiskLevel | None = None
    yes_count: Count | None = None
    red_flags: Codes = []


class RiskReviewRequested(CaseEventData):
    """A reassessment would have lowered the level: kept, not applied; the coordinator reviews it."""

    risk_level: RiskLevel
    proposed_risk_level: RiskLevel
    assessed_by_role: Text


class ProtectionOrderRecorded(CaseEventData):
    """A protection order of the case was recorded or changed."""

    order_id: uuid.UUID
    kind: Text
    status: Text | None = None
    issued_at: Instant | None = None
    expires_at: Instant | None = None


class ConsentChanged(CaseEventData):
    """The kinds of institution the survivor lets the case be shared with changed."""

    share_with: Kinds
    withdrawn: Kinds = []


class CaseClosed(CaseEventData):
    """The case was closed."""

    closed_at: Instant | None = None


class CaseReopened(CaseEventData):
    """The case was reopened."""


Municipality = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{1,62}$")]


class TransferEventData(CaseEventData):
    """A transfer between municipalities (CONTRACT §10): coded facts only, never the reason's text."""

    transfer_id: uuid.UUID
    from_municipality: Municipality
    to_municipality: Municipality
    risk_level: RiskLevel | None = None


class TransferRequested(TransferEventData):
    """A municipality asked another to take over a case."""

    requested_at: Instant


class CaseTransferred(TransferEventData):
    """The receiving municipality accepted the case: it goes on under a new case number."""

    previous_case_number: CaseNumber
    accepted_at: Instant
    needs: Codes = []
    violence_types: Codes = []
    children_count: Count | None = None
    consent_share_with: Codes = []


class TransferDeclined(TransferEventData):
    """The receiving municipality declined the transfer."""

    declined_at: Instant


class CaseLinksChanged(CaseEventData):
    """The case's state after the coordinator's duplicate decision: flags and counts, never the other case."""

    repeat: bool
    linked_count: Count = 0
    pending_duplicates: Count = 0


class CaseLinked(CaseLinksChanged):
    """`case.linked`: a decision on one of the case's pairs (same person, or not) was recorded."""


class CaseUnlinked(CaseLinksChanged):
    """`case.unlinked`: a decision on one of the case's pairs was undone."""


class CaseAnonymised(CaseEventData):
    """The case's identity and free text are erased (a lawful request, or retention after closure)."""

    cause: Literal["request", "retention"]
    erased_at: Instant | None = None


class CaseFactsCorrected(CaseEventData):
    """A correction of the survivor's identity changed a coded fact other services keep (today the age
    group, after a corrected date of birth). The new value only; never the identity itself."""

    age_group: AgeGroup


# --- mkr.referral.events ----------------------------------------------------------------------------


class MemberSaved(EventData):
    """A member of the mechanism's directory was added or changed."""

    member_id: uuid.UUID
    kind: MemberKind
    name: Info | None = None  # an institution's name, not a person's
    services: Codes = []
    email: Info | None = None  # the institution's contact address
    active: bool = True


class ReferralEventData(CaseEventData):
    referral_id: uuid.UUID
    to_member_id: Text  # compared with the `member_id` claim of tokens, which is the identity provider's text
    to_member_kind: Text


class ReferralCreated(ReferralEventData):
    """A case was referred to a member (by routing or by hand)."""

    status: Text
    urgency: Text
    service: Info | None = None
    reason: Text | None = None  # a code (`manual`, a routing rule's name), never free text
    ack_due_at: Instant | None = None
    consent_override: bool = False
    legal_exception: Text | None = None


class ReferralStatusChanged(ReferralEventData):
    """A referral moved in its life cycle."""

    previous_status: Text
    status: Text
    by_role: Text | None = None
    at: Instant | None = None
    reason: Text | None = None  # a coded reason (e.g. `consent_withdrawn`), never free text


class ReferralSlaBreached(ReferralEventData):
    """A referral was not acknowledged in time."""

    urgency: Text
    ack_due_at: Instant | None = None


class MechanismGap(CaseEventData):
    """Routing wanted a kind of member the municipality's directory lacks."""

    missing_kind: Text
    rule: Text | None = None


class MeetingScheduled(EventData):
    """A case-management (ETN) meeting was scheduled."""

    meeting_id: uuid.UUID
    kind: Text
    scheduled_for: Instant
    held: bool = False
    case_ids: Annotated[list[uuid.UUID], Field(max_length=1000)] = []
    member_ids: Annotated[list[Text], Field(max_length=1000)] = []


class PlanActionData(EventData):
    action_id: uuid.UUID
    case_id: uuid.UUID
    case_number: CaseNumber
    responsible_member_id: Text
    due_date: date


class MinutesRecorded(EventData):
    """The minutes of a meeting were recorded, with their plan actions."""

    meeting_id: uuid.UUID
    kind: Text | None = None
    actions: Annotated[list[PlanActionData], Field(max_length=1000)] = []


class PlanActionOverdue(PlanActionData):
    """A plan action passed its due date undone."""


# --- mkr.shelter.events -----------------------------------------------------------------------------


class ShelterAvailability(EventData):
    shelter_id: uuid.UUID
    member_id: Text | None = None
    kind: Text | None = None
    capacity: Count
    free_beds: Count
    accepts_children: bool | None = None


class ShelterAvailabilityChanged(ShelterAvailability):
    """A shelter's free beds changed."""


class ShelterFull(ShelterAvailability):
    """A shelter's last free bed was taken."""


class PlacementEventData(EventData):
    placement_id: uuid.UUID
    case_id: uuid.UUID
    case_number: CaseNumber | None = None
    shelter_id: uuid.UUID
    adults: Count = 0
    children: Count = 0


class PlacementStarted(PlacementEventData):
    """A survivor (and children) were placed in a shelter."""

    planned_until: date | None = None
    started_at: Instant | None = None


class PlacementEnded(PlacementEventData):
    """A placement ended (the discharge reason as a code)."""

    ended_at: Instant | None = None
    reason: Text | None = None  # the discharge code, never the text


class RentBonusDecided(EventData):
    """A rent-bonus application was approved or rejected."""

    application_id: uuid.UUID
    case_id: uuid.UUID
    case_number: CaseNumber | None = None
    approved: bool
    monthly_amount: Money | None = None
    months: Count | None = None
    start_month: Month | None = None
    total: Money | None = None


class RentBonusPaymentData(EventData):
    application_id: uuid.UUID
    payment_id: uuid.UUID
    case_id: uuid.UUID
    case_number: CaseNumber | None = None
    month: Month
    amount: Money | None = None


class RentBonusPaymentDue(RentBonusPaymentData):
    """A rent-bonus payment is due."""


class RentBonusPaymentPaid(RentBonusPaymentData):
    """A rent-bonus payment was marked paid."""

    paid_at: Instant | None = None


class RentBonusEnding(EventData):
    """A rent bonus reaches its last month."""

    application_id: uuid.UUID
    case_id: uuid.UUID
    case_number: CaseNumber | None = None
    last_month: Month


# --- mkr.notifications.events -----------------------------------------------------------------------


class ProtectionOrderExpiring(CaseEventData):
    """An issued protection order expires within the warning window."""

    order_id: uuid.UUID
    kind: Text
    expires_at: Instant
    police_member_id: Text | None = None


class NoFreeBed(EventData):
    """No shelter of the municipality has a free bed."""

    municipality: Text | None = None
    shelters: Count | None = None
    free_beds: Count


class TransferOverdue(TransferEventData):
    """A transfer request has waited too long for an answer."""

    requested_at: Instant
    hours: Count


class NotificationFailed(EventData):
    """A webhook or e-mail delivery was given up after its attempts."""

    delivery_id: uuid.UUID
    subscription_id: uuid.UUID | None = None
    event_id: uuid.UUID
    event_type: Text
    channel: Text
    attempts: Count


# Every event type: the topic it travels on and the model of its data (one model per type). The type
# strings live here and only here: `Model.TYPE`, `Model.TOPIC` are set from this table.
EVENT_TYPES: Mapping[str, tuple[str, type[EventData]]] = {
    "case.reported": (INTAKE_TOPIC, CaseReported),
    "case.risk_assessed": (INTAKE_TOPIC, CaseRiskAssessed),
    "case.risk_review_requested": (INTAKE_TOPIC, RiskReviewRequested),
    "case.protection_order_recorded": (INTAKE_TOPIC, ProtectionOrderRecorded),
    "case.consent_changed": (INTAKE_TOPIC, ConsentChanged),
    "case.closed": (INTAKE_TOPIC, CaseClosed),
    "case.reopened": (INTAKE_TOPIC, CaseReopened),
    "case.linked": (INTAKE_TOPIC, CaseLinked),
    "case.unlinked": (INTAKE_TOPIC, CaseUnlinked),
    "case.transfer_requested": (INTAKE_TOPIC, TransferRequested),
    "case.transferred": (INTAKE_TOPIC, CaseTransferred),
    "case.transfer_declined": (INTAKE_TOPIC, TransferDeclined),
    "case.anonymised": (INTAKE_TOPIC, CaseAnonymised),
    "case.facts_corrected": (INTAKE_TOPIC, CaseFactsCorrected),
    "member.saved": (REFERRAL_TOPIC, MemberSaved),
    "referral.created": (REFERRAL_TOPIC, ReferralCreated),
    "referral.status_changed": (REFERRAL_TOPIC, ReferralStatusChanged),
    "referral.sla_breached": (REFERRAL_TOPIC, ReferralSlaBreached),
    "mechanism.gap": (REFERRAL_TOPIC, MechanismGap),
    "etn.meeting_scheduled": (REFERRAL_TOPIC, MeetingScheduled),
    "etn.minutes_recorded": (REFERRAL_TOPIC, MinutesRecorded),
    "plan.action_overdue": (REFERRAL_TOPIC, PlanActionOverdue),
    "shelter.availability_changed": (SHELTER_TOPIC, ShelterAvailabilityChanged),
    "shelter.full": (SHELTER_TOPIC, ShelterFull),
    "placement.started": (SHELTER_TOPIC, PlacementStarted),
    "placement.ended": (SHELTER_TOPIC, PlacementEnded),
    "rent_bonus.decided": (SHELTER_TOPIC, RentBonusDecided),
    "rent_bonus.payment_due": (SHELTER_TOPIC, RentBonusPaymentDue),
    "rent_bonus.payment_paid": (SHELTER_TOPIC, RentBonusPaymentPaid),
    "rent_bonus.ending": (SHELTER_TOPIC, RentBonusEnding),
    "case.protection_order_expiring": (NOTIFICATIONS_TOPIC, ProtectionOrderExpiring),
    "shelter.none_available": (NOTIFICATIONS_TOPIC, NoFreeBed),
    "case.transfer_overdue": (NOTIFICATIONS_TOPIC, TransferOverdue),
    "notification.failed": (NOTIFICATIONS_TOPIC, NotificationFailed),
}


def _name_the_models() -> None:
    seen: set[type[EventData]] = set()
    for type_, (topic, model) in EVENT_TYPES.items():
        assert model not in seen, f"{model.__name__} is the model of two event types: give each its own"
        assert topic in TOPIC_SOURCES, f"{type_} travels on {topic}, which is not a topic of the contract"
        seen.add(model)
        model.TYPE = type_
        model.TOPIC = topic


_name_the_models()


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

    def check(self, topic: str, envelope: Any) -> EventData:
        """The envelope's data as its model; EventRejected unless a consumer of `topic` may apply it."""
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
        return validate_data(model, head.data)


def validate_data(model: type[EventData], data: Mapping[str, Any]) -> EventData:
    """`data` as `model`, or EventRejected("invalid_data") (nothing of the data is kept in the error)."""
    try:
        return model.model_validate(data)
    except ValidationError:
        raise EventRejected("invalid_data") from None


def contracts_for(topic_prefix: str) -> EventContracts:
    return EventContracts(topic_prefix=topic_prefix)


__all__ = [
    "ALL_TOPICS",
    "EVENT_TYPES",
    "INTAKE_TOPIC",
    "NOTIFICATIONS_TOPIC",
    "REFERRAL_TOPIC",
    "REJECTION_REASONS",
    "SCHEMA_VERSION",
    "SHELTER_TOPIC",
    "TOPIC_SOURCES",
    "EventContracts",
    "EventData",
    "EventRejected",
    "contracts_for",
    "validate_data",
]
