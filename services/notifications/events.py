"""What notifications consumes (every topic) and publishes; each event raises its alerts once.

The consumer base records the event id with the effect (one transaction), and alerts and
deliveries carry unique keys, so a repeated event adds nothing. Delivery is left to the worker
(`delivery.py`): the consumer only inserts rows.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import Counter
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.notifications import access, domain, transfers
from services.notifications.config import NotificationsConfig
from services.notifications.models import (
    Alert,
    AlertRuleRow,
    CasePolice,
    Delivery,
    MemberContact,
    MunicipalityBeds,
    ProtectionOrder,
    ShelterBeds,
    Subscription,
)
from shared import observability
from shared.contracts import ALL_TOPICS, EventData
from shared.contracts import events as contract
from shared.db import table_of
from shared.dispatch import EventHandlers, Received
from shared.events import Envelope, emit
from shared.settings import Settings

log = logging.getLogger("mkr.notifications")

# Every topic, its own included.
CONSUMED_TOPICS = ALL_TOPICS
# Alert inserts are serialized so that `seq` order is commit order (the SSE stream resumes by seq).
ALERT_INSERT_LOCK = 7310401
ALERTS_RAISED = Counter("mkr_alerts_raised_total", "Inbox alerts raised", ["type", "severity"])


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def _rule(row: AlertRuleRow) -> domain.AlertRule:
    return domain.AlertRule(
        event_type=row.event_type,
        alert_type=row.alert_type,
        recipient_kind=row.recipient_kind,  # type: ignore[arg-type]
        recipient_ref=row.recipient_ref,
        severity=row.severity,  # type: ignore[arg-type]
        channels=tuple(row.channels),  # type: ignore[arg-type]
        condition=row.condition or {},
        priority=row.priority,
    )


class EventHandler:
    """The consumer's handler: projections (typed, by event model), then for every event its alerts, e-mail
    and webhook delivery rows (alert rules and subscriptions are data, matched by event type)."""

    def __init__(self, settings: Settings, config: NotificationsConfig) -> None:
        self.settings = settings
        self.config = config
        self.registry = EventHandlers(
            {
                contract.MemberSaved: _save_member,
                contract.ProtectionOrderRecorded: _save_protection_order,
                contract.ShelterAvailabilityChanged: self._save_beds,
                contract.ShelterFull: self._save_beds,
                contract.CaseReported: _save_reporting_police,
                contract.ReferralCreated: _save_referred_police,
                contract.TransferRequested: _on_transfer,
                contract.CaseTransferred: _on_transfer,
                contract.TransferDeclined: _on_transfer,
                contract.TransferOverdue: _on_transfer,
            },
            every=self._alert_and_deliver,
            topics=CONSUMED_TOPICS,
        )

    async def __call__(self, session: AsyncSession, event: Envelope) -> None:
        await self.registry(session, event)

    async def _alert_and_deliver(self, session: AsyncSession, event: Received[EventData]) -> None:
        await self._raise_alerts(session, event.envelope, event.envelope.data)
        await self._queue_webhooks(session, event.envelope)

    # --- projections ---------------------------------------------------------------------------

    async def _save_beds(
        self, session: AsyncSession, event: Received[contract.ShelterAvailability]
    ) -> None:
        data = event.data
        stmt = pg_insert(ShelterBeds).values(
            shelter_id=str(data.shelter_id),
            municipality=event.municipality,
            member_id=data.member_id or None,
            free_beds=data.free_beds,
            updated_at=datetime.now(UTC),
        )
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=["shelter_id"],
                set_={k: stmt.excluded[k] for k in ("municipality", "member_id", "free_beds", "updated_at")},
            )
        )
        await self._watch_free_beds(session, event.municipality)

    async def _watch_free_beds(self, session: AsyncSession, municipality: str) -> None:
        """`shelter.none_available` once when a municipality's last free bed is taken (again after one frees)."""
        # One row per municipality, locked: two replicas never both raise (or both miss) the alert.
        await session.execute(pg_insert(MunicipalityBeds).values(municipality=municipality).on_conflict_do_nothing())
        state = (
            await session.execute(
                sa.select(MunicipalityBeds).where(col(MunicipalityBeds.municipality) == municipality).with_for_update()
            )
        ).scalar_one()
        beds = (
            await session.execute(
                sa.select(sa.func.coalesce(sa.func.sum(col(ShelterBeds.free_beds)), 0), sa.func.count()).where(
                    col(ShelterBeds.municipality) == municipality
                )
            )
        ).one()
        total, shelters = int(beds[0]), int(beds[1])
        if total == 0 and state.none_free_since is None:
            state.none_free_since = datetime.now(UTC)
            state.episode += 1
            await emit(
                session,
                self.settings,
                contract.NoFreeBed(municipality=municipality, shelters=shelters, free_beds=0),
                subject=municipality,
                municipality=municipality,
                event_id=domain.derived_event_id("no-free-bed", municipality, str(state.episode)),
            )
        elif total > 0 and state.none_free_since is not None:
            state.none_free_since = None
        session.add(state)
        await session.flush()

    # --- alerts --------------------------------------------------------------------------------

    async def _raise_alerts(self, session: AsyncSession, event: Envelope, data: dict[str, Any]) -> None:
        """The event's alerts (the enabled rules of its type choose the recipients), each once; e-mail rows
        for those whose rule says so."""
        chosen = domain.alerts_for(await _enabled_rules(session, event.type), event.type, data)
        if not chosen:
            return
        await session.execute(sa.select(sa.func.pg_advisory_xact_lock(ALERT_INSERT_LOCK)))
        params = domain.alert_parameters(data)
        case_id = _uuid_or_none(data.get("case_id"))
        for rule, recipient in chosen:
            alert_id = await _insert_alert(session, event, rule, recipient, case_id=case_id, params=params)
            if alert_id is None:
                continue
            ALERTS_RAISED.labels(rule.alert_type, rule.severity).inc()
            if "email" in rule.channels and recipient.member_id and self.config.email_enabled:
                await self._queue_email(session, event, alert_id, recipient.member_id)

    async def _queue_email(self, session: AsyncSession, event: Envelope, alert_id: uuid.UUID, member_id: str) -> None:
        address = await session.scalar(
            sa.select(col(MemberContact.email)).where(
                col(MemberContact.member_id) == member_id, col(MemberContact.municipality) == event.municipality
            )
        )
        if not address:
            return
        await session.execute(
            pg_insert(Delivery)
            .values(
                id=uuid.uuid4(),
                dedupe_key=f"email:{alert_id}:{address}",
                channel="email",
                alert_id=alert_id,
                address=address,
                event_id=event.id,
                event_type=event.type,
                municipality=event.municipality,
                payload=observability.trace_payload(),  # the message is rendered from the alert when sent
                next_attempt_at=datetime.now(UTC),
            )
            .on_conflict_do_nothing()
        )

    # --- webhooks ------------------------------------------------------------------------------

    async def _queue_webhooks(self, session: AsyncSession, event: Envelope) -> None:
        # A transfer concerns two municipalities: both sides' subscribers receive its events.
        municipalities = {event.municipality}
        if event.type in transfers.TRANSFER_EVENTS:
            municipalities |= {str(event.data.get(side)) for side in ("from_municipality", "to_municipality")}
        subscriptions = (
            (
                await session.execute(
                    sa.select(Subscription).where(
                        col(Subscription.municipality).in_(sorted(municipalities)),
                        col(Subscription.deleted_at).is_(None),
                        col(Subscription.event_types).any_() == event.type,
                    )
                )
            )
            .scalars()
            .all()
        )
        payload = event.model_dump_json()
        for subscription in subscriptions:
            if not access.receives(subscription, event.type, event.data):
                continue
            await session.execute(
                pg_insert(Delivery)
                .values(
                    id=uuid.uuid4(),
                    dedupe_key=f"webhook:{subscription.id}:{event.id}",
                    channel="webhook",
                    subscription_id=subscription.id,
                    event_id=event.id,
                    event_type=event.type,
                    municipality=subscription.municipality,
                    payload=payload,
                    next_attempt_at=datetime.now(UTC),
                )
                .on_conflict_do_nothing()
            )


async def _enabled_rules(session: AsyncSession, event_type: str) -> list[domain.AlertRule]:
    rows = (
        await session.execute(
            sa.select(AlertRuleRow).where(
                col(AlertRuleRow.event_type) == event_type,
                col(AlertRuleRow.enabled).is_(True),
            )
        )
    ).scalars()
    return [_rule(r) for r in rows]


async def _insert_alert(
    session: AsyncSession,
    event: Envelope,
    rule: domain.AlertRule,
    recipient: domain.Recipient,
    *,
    case_id: uuid.UUID | None,
    params: dict[str, Any],
) -> uuid.UUID | None:
    """One alert of the event for one recipient; None when it was raised already (a redelivery)."""
    shelter_id = recipient.shelter_id
    if recipient.member_id and shelter_id is None:
        # A referral to a shelter's member reaches that shelter's staff too.
        shelter_id = await session.scalar(
            sa.select(col(ShelterBeds.shelter_id)).where(col(ShelterBeds.member_id) == recipient.member_id).limit(1)
        )
    alert_id = uuid.uuid4()
    inserted = await session.execute(
        pg_insert(Alert)
        .values(
            id=alert_id,
            event_id=event.id,
            event_type=event.type,
            type=rule.alert_type,
            severity=rule.severity,
            municipality=event.municipality,
            recipient_key=recipient.key,
            role=recipient.role,
            member_id=recipient.member_id,
            shelter_id=shelter_id,
            sub=recipient.sub,
            case_id=case_id,
            params=params,
            created_at=datetime.now(UTC),
        )
        .on_conflict_do_nothing()
        .returning(col(Alert.id))
    )
    return alert_id if inserted.first() is not None else None


async def notification_failed(session: AsyncSession, settings: Settings, delivery: Delivery) -> None:
    """Announce a dead-lettered delivery (in the transaction that marks it dead)."""
    data = contract.NotificationFailed(
        delivery_id=delivery.id,
        subscription_id=delivery.subscription_id if delivery.subscription_id else None,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        channel=delivery.channel,
        attempts=delivery.attempts,
    )
    await emit(
        session, settings, data, subject=str(delivery.id), municipality=delivery.municipality,
        key=str(delivery.subscription_id or delivery.id),
    )


# --- projections: directory contacts, protection orders, the police member of a case ----------------


async def _save_member(session: AsyncSession, event: Received[contract.MemberSaved]) -> None:
    data = event.data
    values = {
        "member_id": str(data.member_id),
        "municipality": event.municipality,
        "kind": str(data.kind),
        "email": data.email or None,
        "updated_at": datetime.now(UTC),
    }
    stmt = pg_insert(MemberContact).values(**values)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["member_id"],
            set_={k: stmt.excluded[k] for k in ("municipality", "kind", "email", "updated_at")},
        )
    )


async def _save_protection_order(session: AsyncSession, event: Received[contract.ProtectionOrderRecorded]) -> None:
    data = event.data
    values = {
        "order_id": str(data.order_id),
        "case_id": str(data.case_id),
        "case_number": data.case_number,
        "municipality": event.municipality,
        "kind": data.kind,
        "status": data.status or "issued",
        "expires_at": data.expires_at,
    }
    stmt = pg_insert(ProtectionOrder).values(**values)
    table = table_of(ProtectionOrder)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["order_id"],
            set_={
                **{k: stmt.excluded[k] for k in ("case_number", "kind", "status", "expires_at")},
                # A renewed order (new expiry) is warned about again.
                "expiry_raised_at": sa.case(
                    (table.c.expires_at.is_distinct_from(stmt.excluded.expires_at), None),
                    else_=table.c.expiry_raised_at,
                ),
            },
        )
    )


async def _on_transfer(session: AsyncSession, event: Received[contract.TransferEventData]) -> None:
    """A transfer's events (services/notifications/transfers.py reads their envelope)."""
    await transfers.on_transfer_event(session, event.envelope)


async def _save_referred_police(session: AsyncSession, event: Received[contract.ReferralCreated]) -> None:
    if event.data.to_member_kind == "police":
        await _save_case_police(session, event, "referred_member_id", event.data.to_member_id)


async def _save_reporting_police(session: AsyncSession, event: Received[contract.CaseReported]) -> None:
    if event.data.reported_by_role == "police" and event.data.reported_by_member_id:
        await _save_case_police(session, event, "reporting_member_id", event.data.reported_by_member_id)


async def _save_case_police(session: AsyncSession, event: Received[Any], column: str, member_id: str) -> None:
    table = table_of(CasePolice)
    stmt = pg_insert(table).values(
        {"case_id": str(event.data.case_id), "municipality": event.municipality, column: member_id}
    )
    await session.execute(stmt.on_conflict_do_update(index_elements=["case_id"], set_={column: stmt.excluded[column]}))


async def police_member_of(session: AsyncSession, case_id: str) -> str | None:
    """The police member an expiring order of this case alerts: the one referred to, else the reporter."""
    row = await session.get(CasePolice, case_id)
    if row is None:
        return None
    return row.referred_member_id or row.reporting_member_id
