"""Request and response bodies of the intake API (the contract's field names)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Sex(StrEnum):
    female = "female"
    male = "male"
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


class Survivor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    first_name: str = Field(min_length=1, max_length=100)
    last_name: str = Field(min_length=1, max_length=100)
    sex: Sex


class CaseReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    municipality: str = Field(pattern=r"^[a-z][a-z0-9-]{1,62}$")
    source: Source
    survivor: Survivor


class CaseOut(BaseModel):
    id: uuid.UUID
    case_number: str
    municipality: str
    status: str
    risk_level: str
    source: str
    reported_at: datetime
