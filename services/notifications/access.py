"""Whose alerts, inbox, subscriptions and deliveries a caller may see (CONTRACT §8).

The role a route admits is its `shared.auth` dependency; these are the object-level rules behind it, in one
place, as SQL conditions (lists and lookups filter in the database) with their Python twins where a row is
already at hand. Something the caller may not see answers 404 like something that does not exist.

- An alert is addressed to a (municipality, role), an institution (`member_id`), a shelter or one user
  (`sub`); the caller sees the alerts of their municipality that name any of their claims (`addressed_to`).
  The live stream's filter (`delivery.Listener.concerns`) is the same rule on a NOTIFY payload.
- The alerts about a case: its municipality's coordinator (the route admits the role), whoever they went to.
- A webhook subscription belongs to an institution (`owner_member_id`) or, for the coordinator, to the
  municipality (no member); a caller sees and deletes only their owner's live ones (`owned_subscriptions`).
  An institution's token without `member_id` may hold none (403).
- A delivery is seen by whoever sees its subscription. A subscription of the event's municipality (both
  sides' for a transfer) that lists its type receives it when `receives` says so: the coordinator's every
  event, an institution's only events that name its member; a dead endpoint never hears of its own failure.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Protocol

import sqlalchemy as sa
from sqlmodel import col

from services.notifications import domain
from services.notifications.models import Alert, Delivery, Subscription
from shared.auth import Principal, Role
from shared.errors import forbidden

# --- alerts ---------------------------------------------------------------------------------------


def addressed_to(principal: Principal) -> sa.ColumnElement[bool]:
    """Alerts for the caller's claims: (municipality, role), member, shelter or user."""
    claims = [col(Alert.role) == principal.role.value]
    if principal.member_id:
        claims.append(col(Alert.member_id) == principal.member_id)
    if principal.shelter_id:
        claims.append(col(Alert.shelter_id) == principal.shelter_id)
    claims.append(col(Alert.sub) == principal.sub)
    return sa.and_(col(Alert.municipality) == principal.municipality, sa.or_(*claims))


def is_addressed_to(principal: Principal, alert: Alert) -> bool:
    """`addressed_to` for one alert in hand."""
    if alert.municipality != principal.municipality:
        return False
    return (
        alert.role == principal.role.value
        or (bool(principal.member_id) and alert.member_id == principal.member_id)
        or (bool(principal.shelter_id) and alert.shelter_id == principal.shelter_id)
        or alert.sub == principal.sub
    )


def case_alerts_visible(principal: Principal, case_id: uuid.UUID) -> sa.ColumnElement[bool]:
    """The alerts about a case the caller may list: those of the caller's municipality."""
    return sa.and_(col(Alert.case_id) == case_id, col(Alert.municipality) == principal.municipality)


# --- webhooks -------------------------------------------------------------------------------------


def subscription_owner(principal: Principal) -> str | None:
    """The owner a caller's subscriptions are held by: the institution's member id, or None (the
    coordinator: the municipality's). 403 for an institution's token that names no member."""
    if principal.role is Role.coordinator:
        return None
    if not principal.member_id:
        raise forbidden("Your token names no institution (member_id); webhooks belong to an institution.")
    return principal.member_id


def owned_subscriptions(principal: Principal) -> sa.ColumnElement[bool]:
    """Subscriptions are the caller's institution's (member_id), or the coordinator's municipality's."""
    owner = subscription_owner(principal)
    by_owner = (
        col(Subscription.owner_member_id).is_(None) if owner is None else col(Subscription.owner_member_id) == owner
    )
    return sa.and_(
        col(Subscription.municipality) == principal.municipality, by_owner, col(Subscription.deleted_at).is_(None)
    )


def owns_subscription(principal: Principal, subscription: Subscription) -> bool:
    """`owned_subscriptions` for one subscription in hand."""
    return (
        subscription.municipality == principal.municipality
        and subscription.deleted_at is None
        and subscription.owner_member_id == subscription_owner(principal)
    )


def visible_deliveries(principal: Principal) -> sa.ColumnElement[bool]:
    """The deliveries of the caller's subscriptions."""
    owned = sa.select(col(Subscription.id)).where(owned_subscriptions(principal))
    return col(Delivery.subscription_id).in_(owned.scalar_subquery())


class Subscriber(Protocol):
    """What `receives` reads of a subscription (a Subscription row, or the consumer's `batch.Subscriber`)."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def owner_member_id(self) -> str | None: ...


def receives(subscription: Subscriber, event_type: str, data: Mapping[str, Any]) -> bool:
    """Whether a subscription that lists the event's type gets a delivery of this event."""
    if subscription.owner_member_id and not domain.concerns_member(data, subscription.owner_member_id):
        return False
    # Never report a dead endpoint to itself.
    return not (event_type == domain.NOTIFICATION_FAILED and data.get("subscription_id") == str(subscription.id))
