"""Alerts of a transfer between municipalities (CONTRACT §10): both coordinators hear of it.

Intake publishes a transfer's events under one municipality (the case's at that moment), but two
coordinators are concerned: each event raises one alert per side, addressed to that municipality's
coordinator (the alert's unique key names the side, so a repeated event raises nothing twice). A
transfer still pending after `transfer_pending_hours` raises `case.transfer_overdue` once (a
scheduled scan over the `pending_transfers` projection), which alerts both as well.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.notifications import batch, domain
from services.notifications.config import NotificationsConfig
from services.notifications.models import Alert, CasePolice, MemberContact, PendingTransfer, ProtectionOrder
from shared.app import ServiceRuntime
from shared.contracts import events as contract
from shared.db import table_of
from shared.events import Envelope, emit
from shared.scheduler import claim_due, periodic

REQUESTED, TRANSFERRED = contract.TransferRequested.TYPE, contract.CaseTransferred.TYPE
DECLINED = contract.TransferDeclined.TYPE
TRANSFER_EVENTS = (REQUESTED, TRANSFERRED, DECLINED, domain.TRANSFER_OVERDUE)

# Per event: (alert type to the sending coordinator, to the receiving one, severity).
ALERTS: dict[str, tuple[str, str, domain.Severity]] = {
    REQUESTED: ("transfer.requested", "transfer.incoming", "warning"),
    TRANSFERRED: ("transfer.accepted", "transfer.accepted", "info"),
    DECLINED: ("transfer.declined", "transfer.declined", "warning"),
    domain.TRANSFER_OVERDUE: ("transfer.overdue", "transfer.overdue", "warning"),
}


def parameters(data: dict[str, Any]) -> dict[str, Any]:
    """Coded facts and case numbers only (the reasons never travel)."""
    names = ("case_number", "previous_case_number", "from_municipality", "to_municipality", "risk_level", "hours")
    return {name: data[name] for name in names if data.get(name) is not None}


async def on_transfer_event(session: AsyncSession, event: Envelope) -> None:
    data = event.data
    await _project(session, event)
    sender_type, receiver_type, severity = ALERTS[event.type]
    params = parameters(data)
    await batch.begin(session)  # the alert lock (taken at the batch's first event, before any other lock)
    sides = ((data["from_municipality"], sender_type), (data["to_municipality"], receiver_type))
    for municipality, alert_type in sides:
        await session.execute(
            pg_insert(Alert)
            .values(
                id=uuid.uuid4(),
                event_id=event.id,
                event_type=event.type,
                type=alert_type,
                severity=severity,
                municipality=municipality,
                recipient_key=f"role:coordinator@{municipality}",
                role="coordinator",
                case_id=uuid.UUID(str(data["case_id"])),
                params=params,
                created_at=datetime.now(UTC),
            )
            .on_conflict_do_nothing()
        )


async def _project(session: AsyncSession, event: Envelope) -> None:
    """Keep each transfer's state: a request adds it, a decision closes it (an overdue event, nothing)."""
    data = event.data
    if event.type == domain.TRANSFER_OVERDUE:
        return
    status = {REQUESTED: "pending", TRANSFERRED: "accepted", DECLINED: "declined"}[event.type]
    requested_at = data.get("requested_at") or event.time.isoformat()
    stmt = pg_insert(PendingTransfer).values(
        transfer_id=str(data["transfer_id"]),
        case_id=str(data["case_id"]),
        case_number=str(data.get("previous_case_number") or data["case_number"]),
        from_municipality=data["from_municipality"],
        to_municipality=data["to_municipality"],
        risk_level=data.get("risk_level"),
        requested_at=datetime.fromisoformat(str(requested_at)),
        status=status,
    )
    table = table_of(PendingTransfer)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["transfer_id"],
            set_={"status": stmt.excluded.status},
            where=table.c.status == "pending",  # a decision is final: a late request never reopens it
        )
    )
    if event.type == TRANSFERRED:
        await _follow_case(session, event)


async def _follow_case(session: AsyncSession, event: Envelope) -> None:
    """The case's expiring orders now warn the receiving coordinator; the sending police member is no
    longer the one to warn (the receiver's is, once a referral names one)."""
    case_id, to = str(event.data["case_id"]), event.municipality
    await session.execute(
        sa.update(ProtectionOrder)
        .where(col(ProtectionOrder.case_id) == case_id)
        .values(municipality=to, case_number=str(event.data["case_number"]))
    )
    # A referral of the receiver's may have been seen first (another topic): only the sender's member goes.
    senders = sa.select(col(MemberContact.member_id)).where(
        col(MemberContact.municipality) == str(event.data["from_municipality"])
    )
    await session.execute(
        sa.update(CasePolice)
        .where(col(CasePolice.case_id) == case_id)
        .values(
            municipality=to,
            reporting_member_id=None,
            referred_member_id=sa.case(
                (col(CasePolice.referred_member_id).in_(senders), None), else_=col(CasePolice.referred_member_id)
            ),
        )
    )


async def raise_overdue_transfers(runtime: ServiceRuntime, config: NotificationsConfig) -> int:
    """Publish `case.transfer_overdue` once per transfer pending longer than `transfer_pending_hours`."""
    cutoff = datetime.now(UTC) - timedelta(hours=config.transfer_pending_hours)
    async with runtime.sessions() as session, session.begin():
        due = await claim_due(
            session,
            sa.select(PendingTransfer)
            .where(
                col(PendingTransfer.status) == "pending",
                col(PendingTransfer.overdue_raised_at).is_(None),
                col(PendingTransfer.requested_at) <= cutoff,
            )
            .order_by(col(PendingTransfer.requested_at)),
        )
        for transfer in due:
            transfer.overdue_raised_at = datetime.now(UTC)
            data = contract.TransferOverdue.model_validate({
                "case_id": transfer.case_id,
                "case_number": transfer.case_number,
                "transfer_id": transfer.transfer_id,
                "from_municipality": transfer.from_municipality,
                "to_municipality": transfer.to_municipality,
                "risk_level": transfer.risk_level,
                "requested_at": transfer.requested_at,
                "hours": int(config.transfer_pending_hours),
            })
            await emit(
                session, runtime.settings, data, subject=transfer.case_id, municipality=transfer.from_municipality,
                event_id=domain.derived_event_id("transfer-overdue", transfer.transfer_id),
            )
    return len(due)


def transfer_scheduler(config: NotificationsConfig) -> Any:
    async def scan(runtime: ServiceRuntime) -> int:
        return await raise_overdue_transfers(runtime, config)

    return periodic("transfer_scheduler", scan, lambda: config.scan_seconds)
