"""Response bodies of the notifications API."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel


class AlertOut(BaseModel):
    id: uuid.UUID
    type: str
    severity: str
    title: str
    body: str
    case_id: uuid.UUID | None
    created_at: datetime
    read_at: datetime | None
