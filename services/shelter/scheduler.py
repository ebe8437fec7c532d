"""Time-based rent-bonus events, each raised exactly once across restarts and replicas."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.shelter import events
from services.shelter.config import ShelterConfig
from services.shelter.models import CaseProjection, RentBonusApplication, RentBonusPayment
from shared.db import table_of
from shared.scheduler import claim_due, periodic
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.app import ServiceRuntime

APPS = table_of(RentBonusApplication)
PAYMENTS = table_of(RentBonusPayment)


async def _case_number(session: AsyncSession, case_id: object) -> str | None:
    case = await session.get(CaseProjection, case_id)
    return case.case_number if case else None


async def raise_due(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    config: ShelterConfig,
    today: date | None = None,
    municipality: str | None = None,
) -> int:
    """One pass: `rent_bonus.payment_due` for due payments whose month has started, `rent_bonus.ending`
    for approvals whose last month starts within `ending_notice_days`. Rows are claimed with
    FOR UPDATE SKIP LOCKED and marked `…_raised_at` in the transaction that writes the event.
    `today` and `municipality` narrow a pass (an operator's re-run of one municipality, tests)."""
    today = today or datetime.now(UTC).date()
    now = datetime.now(UTC)
    raised = 0
    payment_scope = [PAYMENTS.c.municipality == municipality] if municipality else []
    app_scope = [APPS.c.municipality == municipality] if municipality else []
    async with sessions() as session, session.begin():
        payments = await claim_due(
            session,
            sa.select(RentBonusPayment)
            .where(
                PAYMENTS.c.status == "due",
                PAYMENTS.c.due_raised_at.is_(None),
                PAYMENTS.c.month <= today,
                *payment_scope,
            )
            .order_by(PAYMENTS.c.month, PAYMENTS.c.id),
        )
        for payment in payments:
            payment.due_raised_at = now
            app = await session.get(RentBonusApplication, payment.application_id)
            assert app is not None
            await events.payment_due(
                session,
                settings,
                payment,
                case_id=app.case_id,
                case_number=await _case_number(session, app.case_id),
            )
            raised += 1
        horizon = today + timedelta(days=config.ending_notice_days)
        ending = await claim_due(
            session,
            sa.select(RentBonusApplication)
            .where(
                APPS.c.status == "approved",
                APPS.c.ending_raised_at.is_(None),
                APPS.c.last_month <= horizon,
                *app_scope,
            )
            .order_by(APPS.c.last_month, APPS.c.id),
        )
        for app in ending:
            app.ending_raised_at = now
            await events.rent_bonus_ending(session, settings, app, await _case_number(session, app.case_id))
            raised += 1
    return raised


def rent_bonus_scheduler(config: ShelterConfig) -> Callable[[ServiceRuntime], Awaitable[None]]:
    async def scan(runtime: ServiceRuntime) -> int:
        return await raise_due(runtime.sessions, runtime.settings, config)

    return periodic("rent_bonus_scheduler", scan, lambda: config.scan_seconds)
