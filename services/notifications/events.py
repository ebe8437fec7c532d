"""What notifications consumes (every topic) and publishes; each event raises its alerts once.

The consumer base records the event id with the effect (one transaction), and alerts and
deliveries carry unique keys, so a repeated event adds nothing. Delivery is left to the worker
(`delivery.py`): the consumer only inserts rows.
"""

from __future__ import annotations

import functools
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import Counter
from sqlalchemy import event as sa_event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from services.notifications import access, batch, domain, transfers
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
# Alert inserts are serialized so that `seq` order is commit order (the SSE stream resumes by seq): the lock and
# what a batch reads once are in batch.py.
ALERTS_RAISED = Counter("mkr_alerts_raised_total", "Inbox alerts raised", ["type", "severity"])


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def _rule(row: Any) -> domain.AlertRule:
    """A rule from its row (an AlertRuleRow or a row of the table's columns)."""
    return domain.AlertRule(
        event_type=row.event_type,
        alert_type=row.alert_type,
        recipient_kind=row.recipient_kind,
        recipient_ref=row.recipient_ref,
        severity=row.severity,
        channels=tuple(row.channels),
        condition=row.condition or {},
        priority=row.priority,
    )


# The consumer's statements, built once (parameters bound per execution): building a statement object per
# event cost more CPU than sending it.
ALERTS = table_of(Alert)
DELIVERIES = table_of(Delivery)
RULES = table_of(AlertRuleRow)
SUBSCRIPTIONS = table_of(Subscription)
SHELTERS = table_of(ShelterBeds)
CONTACTS = table_of(MemberContact)
_INSERT_DELIVERY = pg_insert(DELIVERIES).on_conflict_do_nothing()
# Executed with a list of rows: SQLAlchemy's "insertmanyvalues" sends them as one multi-row INSERT (pages of
# 1000) from one compiled statement; a `.values([...])` statement would be compiled again for every batch.
_INSERT_ALERTS = pg_insert(ALERTS).on_conflict_do_nothing().returning(ALERTS.c.id)
_ENABLED_RULES = sa.select(RULES).where(RULES.c.enabled.is_(True))
_SUBSCRIBERS = sa.select(
    SUBSCRIPTIONS.c.id, SUBSCRIPTIONS.c.municipality, SUBSCRIPTIONS.c.owner_member_id, SUBSCRIPTIONS.c.event_types
).where(SUBSCRIPTIONS.c.municipality.in_(sa.bindparam("municipalities", expanding=True)),
        SUBSCRIPTIONS.c.deleted_at.is_(None))
_SHELTER_OF_MEMBER = (
    sa.select(SHELTERS.c.shelter_id).where(SHELTERS.c.member_id == sa.bindparam("member_id")).limit(1)
)
_EMAIL_OF_MEMBER = sa.select(CONTACTS.c.email).where(
    CONTACTS.c.member_id == sa.bindparam("member_id"), CONTACTS.c.municipality == sa.bindparam("municipality")
)


class EventHandler:
    """The consumer's handler: projections (typed, by event model), then for every event its alerts, e-mail
    and webhook delivery rows (alert rules and subscriptions are data, matched by event type)."""

    def __init__(self, settings: Settings, config: NotificationsConfig) -> None:
        self.settings = settings
        self.config = config
        self.reads = batch.Reads()  # rules and subscriptions, kept while their generation stands
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
        await batch.begin(session, self.reads)  # at a batch's first event, the alert lock: before any other lock
        await self.registry(session, event)

    async def _alert_and_deliver(self, session: AsyncSession, event: Received[EventData]) -> None:
        await self._raise_alerts(session, event.envelope, event.envelope.data)
        await self._queue_webhooks(session, event.envelope)

    # --- projections ---------------------------------------------------------------------------

    async def _save_beds(
        self, session: AsyncSession, event: Received[contract.ShelterAvailability]
    ) -> None:
        data = event.data
        (await batch.begin(session)).forget_shelters()
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
        for those whose rule says so. Inserted with the batch's other alerts when it commits."""
        state = await batch.begin(session)  # holds the alert lock
        chosen = domain.alerts_for(await _enabled_rules(session, state, event.type), event.type, data)
        if not chosen:
            return
        params = domain.alert_parameters(data)
        case_id = _uuid_or_none(data.get("case_id"))
        for rule, recipient in chosen:
            shelter_id = recipient.shelter_id
            if recipient.member_id and shelter_id is None:
                # A referral to a shelter's member reaches that shelter's staff too.
                shelter_id = await _shelter_of(session, state, recipient.member_id)
            row = _alert_row(event, rule, recipient, shelter_id=shelter_id, case_id=case_id, params=params)
            email = None
            if "email" in rule.channels and recipient.member_id and self.config.email_enabled:
                email = await _email_row(session, state, event, row["id"], recipient.member_id)
            state.alerts.append(batch.PendingAlert(row, rule.alert_type, rule.severity, email))
        if not state.inserting:
            state.inserting = True
            sa_event.listen(session.sync_session, "before_commit", functools.partial(_insert_alerts, state), once=True)

    # --- webhooks ------------------------------------------------------------------------------

    async def _queue_webhooks(self, session: AsyncSession, event: Envelope) -> None:
        # A transfer concerns two municipalities: both sides' subscribers receive its events.
        municipalities = {event.municipality}
        if event.type in transfers.TRANSFER_EVENTS:
            municipalities |= {str(event.data.get(side)) for side in ("from_municipality", "to_municipality")}
        subscribers = await _subscribers(session, await batch.begin(session), tuple(sorted(municipalities)))
        payload: str | None = None
        for subscriber in subscribers:
            if event.type not in subscriber.event_types or not access.receives(subscriber, event.type, event.data):
                continue
            payload = payload or event.model_dump_json()
            await session.execute(
                _INSERT_DELIVERY,
                {
                    "id": uuid.uuid4(),
                    "dedupe_key": f"webhook:{subscriber.id}:{event.id}",
                    "channel": "webhook",
                    "subscription_id": subscriber.id,
                    "event_id": event.id,
                    "event_type": event.type,
                    "municipality": subscriber.municipality,
                    "payload": payload,
                    "next_attempt_at": datetime.now(UTC),
                },
            )


async def _subscribers(
    session: AsyncSession, state: batch.Batch, municipalities: tuple[str, ...]
) -> list[batch.Subscriber]:
    """The live subscriptions of the municipalities (read again only when the reads generation moved)."""
    found = state.reads.subscribers.get(municipalities)
    if found is None:
        rows = await session.execute(_SUBSCRIBERS, {"municipalities": list(municipalities)})
        found = state.reads.subscribers[municipalities] = [
            batch.Subscriber(row.id, row.municipality, row.owner_member_id, frozenset(row.event_types)) for row in rows
        ]
    return found


async def _enabled_rules(session: AsyncSession, state: batch.Batch, event_type: str) -> list[domain.AlertRule]:
    """The enabled rules of the event type (every type's, read again only when the reads generation moved)."""
    if state.reads.rules is None:
        rules: dict[str, list[domain.AlertRule]] = {}
        for row in await session.execute(_ENABLED_RULES):
            rules.setdefault(row.event_type, []).append(_rule(row))
        state.reads.rules = rules
    return state.reads.rules.get(event_type, [])


async def _shelter_of(session: AsyncSession, state: batch.Batch, member_id: str) -> str | None:
    """The member's shelter (the projection as this event sees it)."""
    if member_id not in state.shelters:
        state.shelters[member_id] = await session.scalar(_SHELTER_OF_MEMBER, {"member_id": member_id})
    return state.shelters[member_id]


async def _email_row(
    session: AsyncSession, state: batch.Batch, event: Envelope, alert_id: uuid.UUID, member_id: str
) -> dict[str, Any] | None:
    """The e-mail delivery of an alert to a member, if the member has an address (as this event sees it)."""
    key = (member_id, event.municipality)
    if key not in state.emails:
        state.emails[key] = await session.scalar(
            _EMAIL_OF_MEMBER, {"member_id": member_id, "municipality": event.municipality}
        )
    address = state.emails[key]
    if not address:
        return None
    return {
        "id": uuid.uuid4(),
        "dedupe_key": f"email:{alert_id}:{address}",
        "channel": "email",
        "alert_id": alert_id,
        "address": address,
        "event_id": event.id,
        "event_type": event.type,
        "municipality": event.municipality,
        "payload": observability.trace_payload(),  # the message is rendered from the alert when sent
        "next_attempt_at": datetime.now(UTC),
    }


def _alert_row(
    event: Envelope,
    rule: domain.AlertRule,
    recipient: domain.Recipient,
    *,
    shelter_id: str | None,
    case_id: uuid.UUID | None,
    params: dict[str, Any],
) -> dict[str, Any]:
    """One alert of the event for one recipient."""
    return {
        "id": uuid.uuid4(),
        "event_id": event.id,
        "event_type": event.type,
        "type": rule.alert_type,
        "severity": rule.severity,
        "municipality": event.municipality,
        "recipient_key": recipient.key,
        "role": recipient.role,
        "member_id": recipient.member_id,
        "shelter_id": shelter_id,
        "sub": recipient.sub,
        "case_id": case_id,
        "params": params,
        "created_at": datetime.now(UTC),
    }


def _insert_alerts(state: batch.Batch, session: Session) -> None:
    """The batch's alerts, in event order, in one statement as it commits (still under the alert lock); an
    alert raised already (a redelivery: its unique key is there) is skipped, and so is its e-mail row."""
    pending, state.alerts = state.alerts, []
    if not pending:
        return
    inserted = set(session.execute(_INSERT_ALERTS, [p.row for p in pending]).scalars())
    emails = []
    for alert in pending:
        if alert.row["id"] in inserted:
            ALERTS_RAISED.labels(alert.alert_type, alert.severity).inc()
            if alert.email is not None:
                emails.append(alert.email)
    if emails:
        session.execute(_INSERT_DELIVERY, emails)


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
    (await batch.begin(session)).forget_contacts()
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


def _case_police_upsert(column: str) -> Any:
    stmt = pg_insert(table_of(CasePolice))
    return stmt.on_conflict_do_update(index_elements=["case_id"], set_={column: stmt.excluded[column]})


_CASE_POLICE_UPSERTS = {column: _case_police_upsert(column) for column in ("referred_member_id", "reporting_member_id")}


async def _save_case_police(session: AsyncSession, event: Received[Any], column: str, member_id: str) -> None:
    await session.execute(
        _CASE_POLICE_UPSERTS[column],
        {"case_id": str(event.data.case_id), "municipality": event.municipality, column: member_id},
    )


async def police_member_of(session: AsyncSession, case_id: str) -> str | None:
    """The police member an expiring order of this case alerts: the one referred to, else the reporter."""
    row = await session.get(CasePolice, case_id)
    if row is None:
        return None
    return row.referred_member_id or row.reporting_member_id
