"""The notifications service's business transactions behind its routes: acknowledging (reading) an alert,
adding and removing a webhook subscription.

Alerts themselves are raised by the consumer (`events.py`, from the alert rules, which are data) and
delivered by the worker (`delivery.py`); no route edits the rules. Who may is checked here with `access.py`;
the rules without I/O are `domain.py`; the routes (api.py) parse, call and shape the answer.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.notifications import access, domain
from services.notifications.config import NotificationsConfig
from services.notifications.delivery import SendFailed, check_destination, seal_secret
from services.notifications.models import Alert, Delivery, Subscription
from services.notifications.schemas import SubscriptionIn
from shared.auth import Principal
from shared.errors import Problem, not_found
from shared.settings import Settings


async def acknowledge(session: AsyncSession, principal: Principal, alert_id: uuid.UUID) -> Alert:
    """Mark an alert read, in the caller's open transaction. Only its addressee may (anyone else: 404);
    reading twice keeps the first `read_at`."""
    alert = (
        await session.execute(
            sa.select(Alert).where(col(Alert.id) == alert_id, access.addressed_to(principal)).with_for_update()
        )
    ).scalar_one_or_none()
    if alert is None:
        raise not_found("alert")
    if alert.read_at is None:
        alert.read_at = datetime.now(UTC)
        session.add(alert)
    return alert


async def check_webhook_url(settings: Settings, url: str) -> None:
    """422 for a destination the environment refuses (loopback, private ranges, hosts not allowed)."""
    try:
        await check_destination(url, settings.environment, settings.webhook_allowed_hosts)
    except SendFailed as exc:
        raise Problem(
            422, f"The webhook URL is refused: {exc}", errors=[{"loc": ["body", "url"], "msg": str(exc)}]
        ) from exc


async def add_subscription(
    session: AsyncSession,
    settings: Settings,
    config: NotificationsConfig,
    principal: Principal,
    body: SubscriptionIn,
) -> tuple[Subscription, str]:
    """A webhook for the caller's owner, with its secret in clear (shown once). Opens its own transaction:
    the URL is checked first (a DNS lookup), outside it. 409 beyond `max_subscriptions` per owner."""
    member_id = access.subscription_owner(principal)
    await check_webhook_url(settings, body.url)
    secret = body.secret or domain.generated_secret()
    row = Subscription(
        municipality=principal.municipality,
        owner_role=principal.role.value,
        owner_member_id=member_id,
        owner_sub=principal.sub,
        url=body.url,
        event_types=body.event_types,
        secret="",
        secret_sealed=True,
    )
    row.secret = seal_secret(settings, row.id, secret)
    async with session.begin():
        # One owner's creations one at a time, so that the cap holds under concurrent requests.
        owner_key = f"subscriptions:{principal.municipality}:{member_id or ''}"
        await session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(owner_key))))
        held = await session.scalar(
            sa.select(sa.func.count()).select_from(Subscription).where(access.owned_subscriptions(principal))
        )
        if int(held or 0) >= config.max_subscriptions:
            raise Problem(
                409,
                f"An owner may hold at most {config.max_subscriptions} webhook subscriptions; delete one first.",
            )
        session.add(row)
    return row, secret


async def remove_subscription(session: AsyncSession, principal: Principal, subscription_id: uuid.UUID) -> None:
    """Delete one of the caller's subscriptions (another owner's: 404), in the caller's open transaction;
    its pending deliveries become `cancelled`."""
    row = (
        await session.execute(
            sa.select(Subscription)
            .where(col(Subscription.id) == subscription_id, access.owned_subscriptions(principal))
            .with_for_update()
        )
    ).scalar_one_or_none()
    if row is None:
        raise not_found("subscription")
    row.deleted_at = datetime.now(UTC)
    session.add(row)
    await session.execute(
        sa.update(Delivery)
        .where(col(Delivery.subscription_id) == subscription_id, col(Delivery.state) == "pending")
        .values(state="cancelled")
    )
