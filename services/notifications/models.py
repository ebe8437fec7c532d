"""Tables of the notifications service (its own database)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


class Alert(SQLModel, table=True):
    __tablename__ = "alerts"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    event_id: uuid.UUID = Field(index=True)
    type: str
    severity: str
    municipality: str
    role: str | None = None
    case_id: uuid.UUID | None = None
    case_number: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC), sa_type=sa.DateTime(timezone=True))
    read_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
