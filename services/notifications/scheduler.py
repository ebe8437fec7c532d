"""The protection-order scan: `case.protection_order_expiring` once per issued order near its expiry.

Built on `shared.scheduler` like referral's and shelter's scans (`claim_due` in one transaction with the
mark and the event; `periodic` repeats it every MKR_NOTIFICATIONS_SCAN_SECONDS).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import col

from services.notifications import domain
from services.notifications.config import NotificationsConfig
from services.notifications.events import police_member_of
from services.notifications.models import ProtectionOrder
from shared.app import ServiceRuntime
from shared.contracts import events as contract
from shared.events import emit
from shared.scheduler import claim_due, periodic


async def raise_expiring_protection_orders(runtime: ServiceRuntime, config: NotificationsConfig) -> int:
    """Publish `case.protection_order_expiring` once per issued order within the warning window."""
    horizon = datetime.now(UTC) + timedelta(days=config.protection_order_warning_days)
    async with runtime.sessions() as session, session.begin():
        due = await claim_due(
            session,
            sa.select(ProtectionOrder)
            .where(
                col(ProtectionOrder.status) == "issued",
                col(ProtectionOrder.expiry_raised_at).is_(None),
                col(ProtectionOrder.expires_at).is_not(None),
                col(ProtectionOrder.expires_at) <= horizon,
            )
            .order_by(col(ProtectionOrder.expires_at)),
        )
        for order in due:
            order.expiry_raised_at = datetime.now(UTC)
            assert order.expires_at is not None
            data = contract.ProtectionOrderExpiring(
                case_id=uuid.UUID(order.case_id),
                case_number=order.case_number,
                order_id=uuid.UUID(order.order_id),
                kind=order.kind,
                expires_at=order.expires_at,
                police_member_id=await police_member_of(session, order.case_id),
            )
            await emit(
                session, runtime.settings, data, subject=order.case_id, municipality=order.municipality,
                event_id=domain.derived_event_id("po-expiring", order.order_id, order.expires_at.isoformat()),
            )
    return len(due)


def protection_order_scheduler(config: NotificationsConfig) -> Any:
    async def scan(runtime: ServiceRuntime) -> int:
        return await raise_expiring_protection_orders(runtime, config)

    return periodic("protection_order_scheduler", scan, lambda: config.scan_seconds)
