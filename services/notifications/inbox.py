"""Reading alerts: who they are addressed to, pages, and the live stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import sqlalchemy as sa
from fastapi import Request
from fastapi.responses import StreamingResponse
from jose import jwt
from jose.exceptions import JOSEError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from starlette.types import Receive, Scope, Send

from services.notifications import domain
from services.notifications.access import addressed_to
from services.notifications.delivery import Broadcaster, Listener
from services.notifications.models import Alert
from services.notifications.schemas import AlertOut
from shared import profiles
from shared.app import ServiceRuntime
from shared.auth import Principal
from shared.paging import Keyset, fetch_page

INBOX_ORDER = Keyset("inbox", (col(Alert.seq),), descending=True)  # newest first


def to_out(alert: Alert, language: domain.Language, profile: profiles.Profile = domain.ALBANIA) -> AlertOut:
    title, body = domain.render(alert.type, alert.params, language, profile)
    assert alert.seq is not None
    return AlertOut(
        id=alert.id,
        type=alert.type,
        severity=alert.severity,
        title=title,
        body=body,
        case_id=alert.case_id,
        created_at=alert.created_at,
        read_at=alert.read_at,
        seq=alert.seq,
    )


async def page(
    session: AsyncSession, principal: Principal, *, unread: bool, limit: int, cursor: str | None
) -> tuple[list[Alert], str | None]:
    """Newest first; returns the rows and the next page's cursor (None at the end)."""
    query = sa.select(Alert).where(addressed_to(principal))
    if unread:
        query = query.where(col(Alert.read_at).is_(None))
    return await fetch_page(session, query, INBOX_ORDER, limit, cursor)


async def since(session: AsyncSession, principal: Principal, after: int, limit: int = 200) -> list[Alert]:
    query = (
        sa.select(Alert).where(addressed_to(principal), col(Alert.seq) > after).order_by(col(Alert.seq)).limit(limit)
    )
    return list((await session.execute(query)).scalars().all())


def sse_frame(alert: AlertOut) -> str:
    return f"id: {alert.seq}\nevent: alert\ndata: {json.dumps(alert.model_dump(mode='json'), ensure_ascii=False)}\n\n"


def token_expiry(request: Request) -> float | None:
    """The `exp` of the request's bearer token (already verified by the route's dependency)."""
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    try:
        exp = jwt.get_unverified_claims(credentials.strip()).get("exp")
    except JOSEError:
        return None
    return float(exp) if isinstance(exp, int | float) else None


class ClosingStream(StreamingResponse):
    """A streaming response that runs `on_close` however it ends (even if its body never starts)."""

    def __init__(self, content: AsyncIterator[str], *, on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()


async def stream(
    runtime: ServiceRuntime,
    broadcaster: Broadcaster,
    listener: Listener,
    principal: Principal,
    *,
    language: domain.Language,
    profile: profiles.Profile = domain.ALBANIA,
    last_event_id: int | None,
    heartbeat_seconds: float,
    ends_at: float | None = None,
) -> AsyncIterator[str]:
    """The caller's alerts as SSE: first those after Last-Event-ID, then each new one as it lands.

    `listener` (opened by the route, closed here or by the response) is woken only by alerts that
    concern the caller; the stream ends at `ends_at` (the token's `exp`, epoch seconds).
    """
    wake = listener.wake
    try:
        if last_event_id is None:
            async with runtime.sessions() as session:
                last = int(await session.scalar(sa.select(sa.func.coalesce(sa.func.max(col(Alert.seq)), 0))) or 0)
        else:
            last = last_event_id
        yield "retry: 2000\n: connected\n\n"
        while not runtime.stopping.is_set():
            wake.clear()
            left = heartbeat_seconds if ends_at is None else ends_at - time.time()
            if left <= 0:
                yield "event: expired\ndata: {}\n\n"
                return
            async with runtime.sessions() as session:
                fresh = await since(session, principal, last)
            for alert in fresh:
                out = to_out(alert, language, profile)
                last = out.seq
                yield sse_frame(out)
            if fresh:
                continue
            try:
                await asyncio.wait_for(wake.wait(), timeout=min(heartbeat_seconds, max(left, 0.01)))
            except TimeoutError:
                if ends_at is None or time.time() < ends_at:
                    yield ": heartbeat\n\n"
    finally:
        broadcaster.close(listener)
