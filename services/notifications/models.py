"""Tables of the notifications service (its own database)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


class NotificationsTable(SQLModel, registry=registry()):
    """Notifications' own metadata, like every service's: table names never clash with another service's when several
    services are imported into one process (tests, the permission renderer)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _tz(**kwargs: Any) -> Any:
    return Field(sa_type=sa.DateTime(timezone=True), **kwargs)  # type: ignore[call-overload]


class AlertRuleRow(NotificationsTable, table=True):
    """An alert rule as data (seeded from `domain.DEFAULT_RULES`)."""

    __tablename__ = "alert_rules"

    id: int | None = Field(default=None, primary_key=True)
    event_type: str = Field(index=True)
    alert_type: str
    recipient_kind: str
    recipient_ref: str
    severity: str
    channels: list[str] = Field(sa_type=ARRAY(sa.Text))  # type: ignore[call-overload]
    condition: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)  # type: ignore[call-overload]
    priority: int = 100
    enabled: bool = True


class Alert(NotificationsTable, table=True):
    """One alert to one addressee; the text is rendered at read time from type + params."""

    __tablename__ = "alerts"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    # Monotonic per database: the SSE `id:`; assigned by the database on insert.
    seq: int | None = Field(default=None, sa_type=sa.BigInteger, nullable=False,  # type: ignore[call-overload]
                            sa_column_kwargs={"server_default": sa.text("nextval('alerts_seq')")})
    event_id: uuid.UUID
    event_type: str
    type: str
    severity: str
    municipality: str
    recipient_key: str
    role: str | None = None
    member_id: str | None = None
    shelter_id: str | None = None
    sub: str | None = None
    case_id: uuid.UUID | None = None
    params: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)  # type: ignore[call-overload]
    created_at: datetime = _tz(default_factory=_now)
    read_at: datetime | None = _tz(default=None)


class MemberContact(NotificationsTable, table=True):
    """Projection of `member.saved`: where an institution's e-mail alerts go."""

    __tablename__ = "member_contacts"

    member_id: str = Field(primary_key=True)
    municipality: str
    kind: str | None = None
    email: str | None = None
    updated_at: datetime = _tz(default_factory=_now)


class ShelterBeds(NotificationsTable, table=True):
    """Projection of `shelter.availability_changed` / `shelter.full`: free beds per shelter."""

    __tablename__ = "shelter_free_beds"

    shelter_id: str = Field(primary_key=True)
    municipality: str = Field(index=True)
    member_id: str | None = Field(default=None, index=True)
    free_beds: int = 0
    updated_at: datetime = _tz(default_factory=_now)


class MunicipalityBeds(NotificationsTable, table=True):
    """Whether the no-free-bed alert is raised for a municipality (once, until a bed frees up)."""

    __tablename__ = "municipality_bed_alerts"

    municipality: str = Field(primary_key=True)
    none_free_since: datetime | None = _tz(default=None)
    episode: int = 0


class ProtectionOrder(NotificationsTable, table=True):
    """Projection of `case.protection_order_recorded`; the scheduler warns before `expires_at`."""

    __tablename__ = "expiring_orders"

    order_id: str = Field(primary_key=True)
    case_id: str
    case_number: str | None = None
    municipality: str
    kind: str | None = None
    status: str
    expires_at: datetime | None = _tz(default=None)
    expiry_raised_at: datetime | None = _tz(default=None)


class CasePolice(NotificationsTable, table=True):
    """The police members involved in a case: the latest one referred to (`referral.created`), the one
    that reported it (`case.reported`). An expiring protection order alerts that member, not all police."""

    __tablename__ = "case_police"

    case_id: str = Field(primary_key=True)
    municipality: str
    referred_member_id: str | None = None
    reporting_member_id: str | None = None


class Subscription(NotificationsTable, table=True):
    """A webhook: events of `event_types` of the owner's municipality (and member) are POSTed to `url`."""

    __tablename__ = "subscriptions"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    municipality: str = Field(index=True)
    owner_role: str
    owner_member_id: str | None = None
    owner_sub: str
    url: str
    event_types: list[str] = Field(sa_type=ARRAY(sa.Text))  # type: ignore[call-overload]
    # Sealed with the service's encryption key (AES-GCM, bound to the row); False only for rows of before.
    secret: str
    secret_sealed: bool = False
    created_at: datetime = _tz(default_factory=_now)
    deleted_at: datetime | None = _tz(default=None)


class Delivery(NotificationsTable, table=True):
    """One event to one webhook, or one alert to one e-mail address, with its retry state."""

    __tablename__ = "deliveries"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    seq: int | None = Field(default=None, sa_type=sa.BigInteger, nullable=False,  # type: ignore[call-overload]
                            sa_column_kwargs={"server_default": sa.text("nextval('deliveries_seq')")})
    dedupe_key: str = Field(unique=True)
    channel: str
    subscription_id: uuid.UUID | None = Field(default=None, index=True)
    alert_id: uuid.UUID | None = None
    address: str | None = None
    event_id: uuid.UUID
    event_type: str
    municipality: str
    payload: str
    state: str = "pending"
    attempts: int = 0
    next_attempt_at: datetime = _tz(default_factory=_now)
    last_attempt_at: datetime | None = _tz(default=None)
    last_status_code: int | None = None
    last_error: str | None = None
    history: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONB)  # type: ignore[call-overload]
    created_at: datetime = _tz(default_factory=_now)
    delivered_at: datetime | None = _tz(default=None)


class PendingTransfer(NotificationsTable, table=True):
    """Projection of intake's transfer events: which transfers are pending since when (the scan alerts
    both coordinators once a transfer waits `transfer_pending_hours`)."""

    __tablename__ = "pending_transfers"

    transfer_id: str = Field(primary_key=True)
    case_id: str
    case_number: str
    from_municipality: str
    to_municipality: str
    risk_level: str | None = None
    requested_at: datetime = _tz()
    status: str = "pending"  # pending | accepted | declined
    overdue_raised_at: datetime | None = _tz(default=None)


class ConsumerReadsGeneration(NotificationsTable, table=True):
    """One row: incremented (by trigger) with every change of `alert_rules` or `subscriptions`; the consumer
    reads those again only when it moved (services/notifications/batch.py)."""

    __tablename__ = "consumer_reads_generation"

    id: int = Field(default=1, primary_key=True, sa_type=sa.SmallInteger)  # type: ignore[call-overload]
    generation: int = Field(default=0, sa_type=sa.BigInteger)  # type: ignore[call-overload]
