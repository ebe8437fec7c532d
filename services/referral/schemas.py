"""Request and response bodies of the referral API."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel


class ReferralOut(BaseModel):
    id: uuid.UUID
    case_id: uuid.UUID
    case_number: str
    municipality: str
    to_member_kind: str
    status: str
    reason: str
    created_at: datetime
