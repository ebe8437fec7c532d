"""HTTP routes of the notifications service: inbox, live stream, webhooks and their deliveries."""

from __future__ import annotations

import uuid
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import StreamingResponse
from sqlmodel import col

from services.notifications import access, commands, domain, inbox
from services.notifications.delivery import TooManyStreams
from services.notifications.models import Delivery, Subscription
from services.notifications.schemas import (
    AlertOut,
    DeliveryOut,
    DeliveryState,
    SubscriptionCreated,
    SubscriptionIn,
    SubscriptionOut,
)
from shared import profiles
from shared.auth import INSTITUTION_ROLES, AnyRole, Principal, Role, allow
from shared.db import SessionDep
from shared.errors import Problem, not_found, problem_response
from shared.paging import Cursor, Keyset, Limit, Page, fetch_page

router = APIRouter(prefix="/v1")

SubscriberRole = Annotated[Principal, Depends(allow(INSTITUTION_ROLES, Role.coordinator))]
AcceptLanguage = Annotated[str | None, Header(alias="Accept-Language")]


def _profile(request: Request) -> profiles.Profile:
    return request.app.state.settings.country  # type: ignore[no-any-return]


def _language(
    accept_language: str | None, request: Request, response: Response | None = None
) -> domain.Language:
    language = domain.language_of(accept_language, _profile(request))
    if response is not None:
        response.headers["Content-Language"] = language
        response.headers["Vary"] = "Accept-Language"
    return language


@router.get("/inbox", response_model=Page[AlertOut], tags=["inbox"], summary="The caller's alerts, newest first")
async def list_inbox(
    principal: AnyRole,
    session: SessionDep,
    request: Request,
    response: Response,
    accept_language: AcceptLanguage = None,
    unread: bool = False,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[AlertOut]:
    """Alerts addressed to the caller's municipality + role, member, shelter or user (`sub`).

    Pages: when more remain, `next_cursor` (also in the `X-Next-Cursor` header and a `Link: rel="next"`,
    as before) carries the opaque cursor for the next, older page.
    """
    language = _language(accept_language, request, response)
    rows, next_cursor = await inbox.page(session, principal, unread=unread, limit=limit, cursor=cursor)
    _next_headers(request, response, next_cursor)
    return Page[AlertOut](items=[inbox.to_out(a, language, _profile(request)) for a in rows], next_cursor=next_cursor)


def _next_headers(request: Request, response: Response, next_cursor: str | None) -> None:
    """The next page's cursor in headers too, as the first release gave it (kept for one release)."""
    if next_cursor is not None:
        response.headers["X-Next-Cursor"] = next_cursor
        response.headers["Link"] = f'<{request.url.include_query_params(cursor=next_cursor)}>; rel="next"'


@router.post("/inbox/{alert_id}/read", response_model=AlertOut, tags=["inbox"], summary="Mark an alert read")
async def mark_read(
    alert_id: uuid.UUID,
    principal: AnyRole,
    session: SessionDep,
    request: Request,
    response: Response,
    accept_language: AcceptLanguage = None,
) -> AlertOut:
    """Only the addressee may; anyone else gets 404. Reading twice keeps the first `read_at`."""
    language = _language(accept_language, request, response)
    async with session.begin():
        alert = await commands.acknowledge(session, principal, alert_id)
    return inbox.to_out(alert, language, _profile(request))


@router.get(
    "/inbox/stream",
    tags=["inbox"],
    summary="The caller's alerts as Server-Sent Events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "`id:` seq, `event: alert`, data JSON"},
        429: {"description": "Too many open streams for this user"},
    },
)
async def stream_inbox(
    principal: AnyRole,
    request: Request,
    accept_language: AcceptLanguage = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
) -> Response:
    """New alerts live (any replica's inserts, via PostgreSQL NOTIFY); a comment heartbeat every 15 s.

    Reconnect with `Last-Event-ID` to get first every alert after that id, then the live ones. At most
    `MKR_NOTIFICATIONS_MAX_STREAMS` streams per user (`sub`) are open at once (429 beyond), and a stream
    ends when its token expires: reconnect with a fresh token.
    """
    resume = _resume_from(last_event_id)
    app = request.app
    config = app.state.notifications_config
    broadcaster = app.state.broadcaster
    try:
        listener = broadcaster.open(
            municipality=principal.municipality,
            role=principal.role.value,
            member_id=principal.member_id,
            shelter_id=principal.shelter_id,
            sub=principal.sub,
            max_per_sub=config.max_streams,
        )
    except TooManyStreams:
        return problem_response(
            429,
            f"At most {config.max_streams} streams may be open at once for one user; close one first.",
            headers={"Retry-After": "5"},
        )
    events = inbox.stream(
        app.state.runtime,
        broadcaster,
        listener,
        principal,
        language=domain.language_of(accept_language, _profile(request)),
        profile=_profile(request),
        last_event_id=resume,
        heartbeat_seconds=config.sse_heartbeat_seconds,
        ends_at=inbox.token_expiry(request),
    )
    return inbox.ClosingStream(
        events,
        on_close=lambda: broadcaster.close(listener),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Vary": "Accept-Language"},
    )


def _resume_from(last_event_id: str | None) -> int | None:
    """The alert seq a reconnecting stream resumes after; 422 for a header that is not one."""
    if last_event_id in (None, ""):
        return None
    if not last_event_id.isdigit():
        raise Problem(
            422,
            "Last-Event-ID must be an event id of this stream.",
            errors=[{"loc": ["header", "Last-Event-ID"], "msg": "not an alert sequence number"}],
        )
    return int(last_event_id)


# --- webhooks ------------------------------------------------------------------------------------


def _subscription_out(row: Subscription) -> SubscriptionOut:
    return SubscriptionOut(
        id=row.id,
        url=row.url,
        event_types=row.event_types,
        municipality=row.municipality,
        owner_member_id=row.owner_member_id,
        created_at=row.created_at,
    )


@router.post(
    "/subscriptions", status_code=201, response_model=SubscriptionCreated, tags=["webhooks"], summary="Add a webhook"
)
async def create_subscription(
    body: SubscriptionIn, principal: SubscriberRole, session: SessionDep, request: Request
) -> SubscriptionCreated:
    """Events of `event_types` in the caller's municipality are POSTed to `url`, signed with `secret`.

    Without a `secret`, a `whsec_` one is generated (Standard Webhooks). Secrets are encrypted at rest.
    An owner holds at most `MKR_NOTIFICATIONS_MAX_SUBSCRIPTIONS` subscriptions (409 beyond).

    An institution's subscription receives only events that name its member (`to_member_id`,
    `responsible_member_id`, `member_id`, `member_ids[]`, `actions[].responsible_member_id`); the
    coordinator's receives every event of the municipality. The secret is shown only here.
    """
    row, secret = await commands.add_subscription(
        session, request.app.state.settings, request.app.state.notifications_config, principal, body
    )
    return SubscriptionCreated(**_subscription_out(row).model_dump(), secret=secret)


SUBSCRIPTION_ORDER = Keyset("subscriptions", (col(Subscription.created_at), col(Subscription.id)))
DELIVERY_ORDER = Keyset("deliveries", (col(Delivery.seq),), descending=True)  # newest first


@router.get("/subscriptions", response_model=Page[SubscriptionOut], tags=["webhooks"], summary="The caller's webhooks")
async def list_subscriptions(
    principal: SubscriberRole,
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[SubscriptionOut]:
    """Oldest first, at most `limit` (an owner holds at most `MKR_NOTIFICATIONS_MAX_SUBSCRIPTIONS`)."""
    query = sa.select(Subscription).where(access.owned_subscriptions(principal))
    rows, next_cursor = await fetch_page(session, query, SUBSCRIPTION_ORDER, limit, cursor)
    return Page[SubscriptionOut](items=[_subscription_out(r) for r in rows], next_cursor=next_cursor)


@router.delete("/subscriptions/{subscription_id}", status_code=204, tags=["webhooks"], summary="Remove a webhook")
async def delete_subscription(subscription_id: uuid.UUID, principal: SubscriberRole, session: SessionDep) -> Response:
    """Stops deliveries: pending ones become `cancelled`."""
    async with session.begin():
        await commands.remove_subscription(session, principal, subscription_id)
    return Response(status_code=204)


@router.get("/deliveries", response_model=Page[DeliveryOut], tags=["webhooks"], summary="Webhook delivery attempts")
async def list_deliveries(
    principal: SubscriberRole,
    session: SessionDep,
    response: Response,
    request: Request,
    subscription_id: uuid.UUID | None = None,
    status: DeliveryState | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[DeliveryOut]:
    """Deliveries of the caller's subscriptions (one, with `subscription_id`), newest first.

    Another owner's subscription answers 404.
    """
    query = sa.select(Delivery).where(access.visible_deliveries(principal))
    if subscription_id is not None:
        owned = await session.get(Subscription, subscription_id)
        if owned is None or not access.owns_subscription(principal, owned):
            raise not_found("subscription")
        query = query.where(col(Delivery.subscription_id) == subscription_id)
    if status is not None:
        query = query.where(col(Delivery.state) == status)
    rows, next_cursor = await fetch_page(session, query, DELIVERY_ORDER, limit, cursor)
    _next_headers(request, response, next_cursor)
    return Page[DeliveryOut](items=[_delivery_out(d) for d in rows], next_cursor=next_cursor)


def _delivery_out(d: Delivery) -> DeliveryOut:
    return DeliveryOut(
        id=d.id,
        subscription_id=d.subscription_id,
        channel=d.channel,
        event_id=d.event_id,
        event_type=d.event_type,
        status=d.state,  # type: ignore[arg-type]
        attempts=d.attempts,
        next_attempt_at=d.next_attempt_at if d.state == "pending" else None,
        last_attempt_at=d.last_attempt_at,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        delivered_at=d.delivered_at,
        created_at=d.created_at,
        history=d.history,
    )
