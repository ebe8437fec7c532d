"""What intake publishes. Only coded facts, never identities (§9)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.intake.models import Case
from shared.events import INTAKE_TOPIC, make_event, publish
from shared.settings import Settings

SOURCE = "mkr/intake"


async def case_reported(session: AsyncSession, settings: Settings, case: Case) -> None:
    data = {
        "case_id": str(case.id),
        "case_number": case.case_number,
        "source": case.source,
        "risk_level": case.risk_level,
        "reported_at": case.reported_at.isoformat(),
        **case.facts,
    }
    event = make_event(
        type_="case.reported", source=SOURCE, subject=str(case.id), municipality=case.municipality, data=data
    )
    await publish(session, settings, INTAKE_TOPIC, event, key=str(case.id))
