"""The deadline scheduler: missed acknowledgements and overdue plan actions, each raised exactly once.

Each scan claims due rows with FOR UPDATE SKIP LOCKED, marks them raised and writes the event to the
outbox in one transaction: across restarts and between replicas every deadline is raised once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlmodel import col

from services.referral import events
from services.referral.config import ReferralConfig
from services.referral.models import PlanAction, Referral
from shared.observability import SLA_BREACHES
from shared.scheduler import claim_due, periodic

if TYPE_CHECKING:
    from shared.app import ServiceRuntime



async def raise_missed_acknowledgements(runtime: ServiceRuntime) -> int:
    now = datetime.now(UTC)
    async with runtime.sessions() as session, session.begin():
        rows = await claim_due(
            session,
            sa.select(Referral)
            .where(
                col(Referral.status) == "pending",
                col(Referral.sla_breached_at).is_(None),
                col(Referral.ack_due_at) < now,
            )
            .order_by(col(Referral.ack_due_at)),
        )
        for referral in rows:
            referral.sla_breached_at = now
            await session.flush()
            await events.sla_breached(session, runtime.settings, referral)
    SLA_BREACHES.inc(len(rows))
    return len(rows)


async def raise_overdue_plan_actions(runtime: ServiceRuntime) -> int:
    today = datetime.now(UTC).date()
    now = datetime.now(UTC)
    async with runtime.sessions() as session, session.begin():
        rows = await claim_due(
            session,
            sa.select(PlanAction)
            .where(
                col(PlanAction.status) == "open",
                col(PlanAction.overdue_raised_at).is_(None),
                col(PlanAction.due_date) < today,
            )
            .order_by(col(PlanAction.due_date)),
        )
        for action in rows:
            action.overdue_raised_at = now
            await session.flush()
            await events.plan_action_overdue(session, runtime.settings, action)
    return len(rows)


def deadline_scheduler(config: ReferralConfig) -> Callable[[ServiceRuntime], Awaitable[None]]:
    async def scan(runtime: ServiceRuntime) -> int:
        return await raise_missed_acknowledgements(runtime) + await raise_overdue_plan_actions(runtime)

    return periodic("referral_deadlines", scan, lambda: config.scan_seconds)
