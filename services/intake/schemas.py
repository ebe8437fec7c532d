"""Request and response bodies of the intake API (the contract's field names, CONTRACT §4–§5)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, model_validator

from shared.paging import Page
from shared.vocab import MemberKind, RiskLevel, Sex


class Ethnicity(StrEnum):
    albanian = "albanian"
    roma = "roma"
    egyptian = "egyptian"
    ashkali = "ashkali"
    serbian = "serbian"
    montenegrin = "montenegrin"
    bosniak = "bosniak"
    greek = "greek"
    macedonian = "macedonian"
    other = "other"
    undisclosed = "undisclosed"


class ViolenceType(StrEnum):
    physical = "physical"
    psychological = "psychological"
    sexual = "sexual"
    economic = "economic"
    stalking = "stalking"


class Relationship(StrEnum):
    spouse = "spouse"
    ex_spouse = "ex_spouse"
    partner = "partner"
    ex_partner = "ex_partner"
    parent = "parent"
    child = "child"
    sibling = "sibling"
    other_family = "other_family"
    other = "other"


class Source(StrEnum):
    police = "police"
    social_services = "social_services"
    child_protection = "child_protection"
    health = "health"
    education = "education"
    ngo = "ngo"
    self_referral = "self_referral"
    hotline = "hotline"
    other = "other"


class Need(StrEnum):
    shelter = "shelter"
    legal_aid = "legal_aid"
    health = "health"
    psychological = "psychological"
    economic_aid = "economic_aid"
    employment = "employment"
    housing = "housing"
    childcare = "childcare"
    protection_order = "protection_order"


class CaseStatus(StrEnum):
    open = "open"
    closed = "closed"


class OrderKind(StrEnum):
    immediate = "immediate"
    protection = "protection"


class OrderStatus(StrEnum):
    requested = "requested"
    issued = "issued"
    rejected = "rejected"
    expired = "expired"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Survivor(Strict):
    first_name: str = Field(min_length=1, max_length=100)
    last_name: str = Field(min_length=1, max_length=100)
    sex: Sex
    date_of_birth: date | None = None
    age: int | None = Field(default=None, ge=0, le=120)
    ethnicity: Ethnicity | None = None
    phone: str | None = Field(default=None, min_length=3, max_length=40)
    address: str | None = Field(default=None, min_length=1, max_length=300)
    disability: bool | None = None

    @model_validator(mode="after")
    def _one_of_age_or_birth(self) -> Survivor:
        if self.date_of_birth is not None and self.age is not None:
            raise ValueError("give date_of_birth or age, not both")
        if self.date_of_birth is not None and self.date_of_birth.year < 1900:
            raise ValueError("date_of_birth is before 1900")
        return self


class Child(Strict):
    sex: Sex | None = None  # None: not known (records imported from paper, CONTRACT §12)
    age: int = Field(ge=0, le=17)


class Incident(Strict):
    occurred_at: AwareDatetime | None = None
    violence_types: list[ViolenceType] = Field(default_factory=list, max_length=5)
    perpetrator_relationship: Relationship | None = None
    description: str | None = Field(default=None, max_length=10000)


class Consent(Strict):
    share_with: list[MemberKind] = Field(default_factory=list, max_length=12)
    given_at: AwareDatetime | None = None


class CaseReport(Strict):
    municipality: str = Field(pattern=r"^[a-z][a-z0-9-]{1,62}$")
    source: Source
    survivor: Survivor
    children: list[Child] = Field(default_factory=list, max_length=30)
    incident: Incident | None = None
    needs: list[Need] = Field(default_factory=list, max_length=9)
    risk_answers: dict[str, StrictBool] | None = Field(default=None, max_length=100)
    consent: Consent | None = None
    reported_at: AwareDatetime | None = None


class PossibleDuplicate(BaseModel):
    id: uuid.UUID
    case_number: str
    score: float


class CaseCreated(BaseModel):
    id: uuid.UUID
    case_number: str
    municipality: str
    status: CaseStatus
    risk_level: RiskLevel
    source: Source
    reported_at: datetime
    possible_duplicates: list[PossibleDuplicate]


class SurvivorOut(BaseModel):
    first_name: str
    last_name: str
    sex: Sex
    date_of_birth: date | None = None
    age: int | None = None
    age_group: str
    ethnicity: Ethnicity | None = None
    phone: str | None = None
    address: str | None = None
    disability: bool | None = None


class ErasedSurvivor(BaseModel):
    """The survivor of an erased case: nothing of her identity is left (CONTRACT §12)."""

    erased: Literal[True] = True


class IncidentOut(BaseModel):
    occurred_at: datetime | None = None
    violence_types: list[ViolenceType] = Field(default_factory=list)
    perpetrator_relationship: Relationship | None = None
    description: str | None = None


class ConsentRecord(BaseModel):
    kind: MemberKind
    given: bool
    at: datetime
    recorded_by_sub: str
    recorded_by_role: str


class ConsentOut(BaseModel):
    share_with: list[MemberKind]
    withdrawn: list[MemberKind]
    given_at: datetime | None = None
    history: list[ConsentRecord]


class RiskAssessmentOut(BaseModel):
    id: uuid.UUID
    risk_level: RiskLevel
    computed_level: RiskLevel
    professional_judgement: RiskLevel | None = None
    yes_count: int
    red_flags: list[str]
    answers: dict[str, bool]
    assessed_at: datetime
    assessed_by_role: str


class ProtectionOrderOut(BaseModel):
    id: uuid.UUID
    kind: OrderKind
    status: OrderStatus
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    court: str | None = None
    reference: str | None = None
    recorded_at: datetime


class CaseOut(BaseModel):
    id: uuid.UUID
    case_number: str
    municipality: str
    status: CaseStatus
    risk_level: RiskLevel
    source: Source
    reported_at: datetime
    survivor: SurvivorOut | ErasedSurvivor
    children: list[Child]
    incident: IncidentOut
    needs: list[Need]
    consent: ConsentOut
    protection_orders: list[ProtectionOrderOut]
    risk_assessments: list[RiskAssessmentOut]
    closed_at: datetime | None = None
    close_reason: str | None = None
    # The numbers the case had in the municipalities it was transferred from (CONTRACT §10), oldest first.
    previous_case_numbers: list[str] = Field(default_factory=list)
    # The coordinator's duplicate decisions (CONTRACT §10). The other cases' ids and the undecided possible
    # duplicates are shown to the coordinator only; `repeat` to everyone who reads the case.
    repeat: bool = False
    repeat_of: uuid.UUID | None = None
    linked_case_ids: list[uuid.UUID] = Field(default_factory=list)
    possible_duplicates: list[PossibleDuplicate] = Field(default_factory=list)


class LinkRelation(StrEnum):
    same_person = "same_person"
    not_same_person = "not_same_person"


class LinkIn(Strict):
    case_id: uuid.UUID
    relation: LinkRelation


class LinksOut(BaseModel):
    """A case among its possible duplicates: whom the coordinator linked it to (directly or through
    another case), whom she ruled apart, what still awaits her decision, and whether it is a repeat."""

    case_id: uuid.UUID
    case_number: str
    risk_level: RiskLevel
    repeat: bool
    repeat_of: uuid.UUID | None = None
    linked_case_ids: list[uuid.UUID]
    not_same_person_case_ids: list[uuid.UUID]
    possible_duplicates: list[PossibleDuplicate]


class CaseSummary(BaseModel):
    id: uuid.UUID
    case_number: str
    status: CaseStatus
    risk_level: RiskLevel
    source: Source
    reported_at: datetime
    first_name: str | None  # None once the case is erased
    last_name: str | None
    age_group: str
    score: float | None = None
    erased: bool = False


CasePage = Page[CaseSummary]


class RiskAssessmentIn(Strict):
    risk_answers: dict[str, StrictBool] = Field(max_length=100)
    professional_judgement: RiskLevel | None = None


class RiskAssessmentResult(BaseModel):
    id: uuid.UUID
    risk_level: RiskLevel
    previous_risk_level: RiskLevel
    yes_count: int
    red_flags: list[str]
    assessed_at: datetime
    # Beyond the contract: a reassessment by anyone but the coordinator never lowers the level; it is
    # kept (as `proposed_risk_level`) and the coordinator is asked to review it.
    review_requested: bool = False
    proposed_risk_level: RiskLevel | None = None


class ProtectionOrderIn(Strict):
    kind: OrderKind
    status: OrderStatus
    issued_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None
    court: str | None = Field(default=None, min_length=1, max_length=200)
    reference: str | None = Field(default=None, min_length=1, max_length=100)

    @model_validator(mode="after")
    def _dates_in_order(self) -> ProtectionOrderIn:
        if self.status is OrderStatus.issued and self.issued_at is None:
            raise ValueError("an issued order needs issued_at")
        if self.issued_at and self.expires_at and self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")
        return self


class CloseIn(Strict):
    reason: str = Field(min_length=1, max_length=2000)


class SurvivorPatch(Strict):
    """Identity fields to correct; only those given change. Names may not be null; a null phone, address
    or date of birth removes it."""

    first_name: str | None = Field(default=None, min_length=1, max_length=100)
    last_name: str | None = Field(default=None, min_length=1, max_length=100)
    date_of_birth: date | None = None
    phone: str | None = Field(default=None, min_length=3, max_length=40)
    address: str | None = Field(default=None, min_length=1, max_length=300)

    @model_validator(mode="after")
    def _names_not_null(self) -> SurvivorPatch:
        for name in ("first_name", "last_name"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} may not be null")
        if not self.model_fields_set:
            raise ValueError("give at least one field to correct")
        if self.date_of_birth is not None and self.date_of_birth.year < 1900:
            raise ValueError("date_of_birth is before 1900")
        return self


class CorrectionOut(BaseModel):
    at: datetime
    sub: str
    role: str
    fields: list[str]


class EraseIn(Strict):
    reason: str = Field(min_length=1, max_length=2000)


class ErasedOut(BaseModel):
    id: uuid.UUID
    case_number: str
    erased_at: datetime


class ReopenIn(Strict):
    reason: str | None = Field(default=None, max_length=2000)


class ConsentChange(Strict):
    share_with: list[MemberKind] = Field(default_factory=list, max_length=12)
    withdraw: list[MemberKind] = Field(default_factory=list, max_length=12)

    @model_validator(mode="after")
    def _something_and_disjoint(self) -> ConsentChange:
        if not self.share_with and not self.withdraw:
            raise ValueError("give share_with or withdraw")
        if set(self.share_with) & set(self.withdraw):
            raise ValueError("a kind cannot be shared with and withdrawn at once")
        return self


class StatusOut(BaseModel):
    id: uuid.UUID
    case_number: str
    status: CaseStatus
    closed_at: datetime | None = None


class AuditEntry(BaseModel):
    at: datetime
    sub: str
    role: str
    action: str
    case_id: uuid.UUID


class RiskQuestion(Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{1,62}$")
    red_flag: bool = False


class RiskScreenIn(Strict):
    questions: list[RiskQuestion] = Field(min_length=1, max_length=100)
    high_yes_count: int = Field(ge=1, le=100)
    medium_yes_count: int = Field(ge=1, le=100)
    # MARAC's "potential escalation": the n-th case of the same person within the window is high risk.
    escalation_cases: int = Field(default=3, ge=2, le=100)
    escalation_window_days: int = Field(default=365, ge=1, le=3660)

    @model_validator(mode="after")
    def _consistent(self) -> RiskScreenIn:
        ids = [q.id for q in self.questions]
        if len(set(ids)) != len(ids):
            raise ValueError("question ids must be unique")
        if self.medium_yes_count >= self.high_yes_count:
            raise ValueError("medium_yes_count must be below high_yes_count")
        return self


class RiskScreenOut(RiskScreenIn):
    municipality: str
    is_default: bool


def jsonable(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


# --- transfers between municipalities (CONTRACT §10) ---


class TransferStatus(StrEnum):
    pending = "pending"
    accepted = "accepted"
    declined = "declined"


class TransferIn(Strict):
    to_municipality: str = Field(pattern=r"^[a-z][a-z0-9-]{1,62}$")
    reason: str = Field(min_length=1, max_length=2000)
    consent_given_at: AwareDatetime


class TransferDecline(Strict):
    reason: str = Field(min_length=1, max_length=2000)


class TransferFacts(BaseModel):
    """What the receiving coordinator sees of a case before she accepts it: coded facts, never identity."""

    risk_level: RiskLevel
    source: str
    sex: str | None = None
    age_group: str = "unknown"
    ethnicity: str | None = None
    disability: bool | None = None
    children_count: int = 0
    violence_types: list[str] = Field(default_factory=list)
    perpetrator_relationship: str | None = None
    needs: list[str] = Field(default_factory=list)
    reported_at: datetime


class TransferOut(BaseModel):
    id: uuid.UUID
    case_id: uuid.UUID
    case_number: str
    from_municipality: str
    to_municipality: str
    status: TransferStatus
    requested_at: datetime
    consent_given_at: datetime
    decided_at: datetime | None = None
    new_case_number: str | None = None
    # The request's and the decline's reasons: to the coordinator of the side that wrote them only.
    reason: str | None = None
    decline_reason: str | None = None
    facts: TransferFacts | None = None

