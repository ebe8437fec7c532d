"""Request and response bodies of the notifications API (CONTRACT §8 field names)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.notifications import domain


class AlertOut(BaseModel):
    """An inbox alert, rendered in the caller's language."""

    id: uuid.UUID
    type: str
    severity: str
    title: str
    body: str
    case_id: uuid.UUID | None
    created_at: datetime
    read_at: datetime | None
    seq: int = Field(description="Monotonic alert number; the SSE event id")


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=8, max_length=2000, examples=["https://police.example.al/mkr-hook"])
    event_types: list[str] = Field(min_length=1, max_length=50)
    secret: str | None = Field(
        default=None, min_length=16, max_length=256, description="HMAC key; generated when omitted"
    )

    @field_validator("event_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - domain.SUBSCRIBABLE_EVENT_TYPES)
        if unknown:
            raise ValueError(f"unknown event types: {', '.join(unknown)}")
        return sorted(set(value))


class SubscriptionOut(BaseModel):
    """A webhook subscription; the secret is never returned after creation."""

    id: uuid.UUID
    url: str
    event_types: list[str]
    municipality: str
    owner_member_id: str | None
    created_at: datetime


class SubscriptionCreated(SubscriptionOut):
    secret: str


DeliveryState = Literal["pending", "succeeded", "dead", "cancelled"]


class DeliveryOut(BaseModel):
    id: uuid.UUID
    subscription_id: uuid.UUID | None
    channel: str
    event_id: uuid.UUID
    event_type: str
    status: DeliveryState
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    history: list[dict[str, Any]] = Field(description="Each attempt: attempt, at, outcome, status_code, error")
