"""The deadline scheduler: missed acknowledgements and overdue plan actions, each raised exactly once.

Each scan claims due rows with FOR UPDATE SKIP LOCKED, marks them raised and writes the event to the
outbox in one transaction: across restarts and between replicas every deadline is raised once.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from services.referral import events
from services.referral.config import ReferralConfig
from services.referral.models import PlanAction, Referral

if TYPE_CHECKING:
    from shared.app import ServiceRuntime

BATCH = 200


async def raise_missed_acknowledgements(runtime: ServiceRuntime) -> int:
    now = datetime.now(UTC)
    async with runtime.sessions() as session, session.begin():
        rows = (
            (
                await session.execute(
                    sa.select(Referral)
                    .where(
                        Referral.status == "pending",  # type: ignore[arg-type]
                        Referral.sla_breached_at.is_(None),  # type: ignore[union-attr]
                        Referral.ack_due_at < now,  # type: ignore[arg-type]
                    )
                    .order_by(Referral.ack_due_at)  # type: ignore[arg-type]
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            .scalars()
            .all()
        )
        for referral in rows:
            referral.sla_breached_at = now
            await session.flush()
            await events.sla_breached(session, runtime.settings, referral)
    return len(rows)


async def raise_overdue_plan_actions(runtime: ServiceRuntime) -> int:
    today = datetime.now(UTC).date()
    now = datetime.now(UTC)
    async with runtime.sessions() as session, session.begin():
        rows = (
            (
                await session.execute(
                    sa.select(PlanAction)
                    .where(
                        PlanAction.status == "open",  # type: ignore[arg-type]
                        PlanAction.overdue_raised_at.is_(None),  # type: ignore[union-attr]
                        PlanAction.due_date < today,  # type: ignore[arg-type]
                    )
                    .order_by(PlanAction.due_date)  # type: ignore[arg-type]
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            .scalars()
            .all()
        )
        for action in rows:
            action.overdue_raised_at = now
            await session.flush()
            await events.plan_action_overdue(session, runtime.settings, action)
    return len(rows)


def deadline_scheduler(config: ReferralConfig):  # type: ignore[no-untyped-def]
    async def referral_deadlines(runtime: ServiceRuntime) -> None:
        while not runtime.stopping.is_set():
            raised = await raise_missed_acknowledgements(runtime)
            raised += await raise_overdue_plan_actions(runtime)
            if raised:
                runtime.relay.wake()
                continue  # more may be due: a full batch was taken
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.stopping.wait(), timeout=config.scan_seconds)

    return referral_deadlines
