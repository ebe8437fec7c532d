"""Tables of the intake service (its own database)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel


class Case(SQLModel, table=True):
    __tablename__ = "cases"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    municipality: str = Field(index=True)
    case_number: str = Field(unique=True)
    status: str = "open"
    risk_level: str = "low"
    source: str
    facts: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(postgresql.JSONB, nullable=False))
    reported_at: datetime = Field(sa_type=sa.DateTime(timezone=True))
    reported_by_sub: str
    reported_by_role: str
    reported_by_member_id: str | None = None


class CaseCounter(SQLModel, table=True):
    __tablename__ = "case_counters"

    municipality: str = Field(primary_key=True)
    year: int = Field(primary_key=True)
    last_seq: int
