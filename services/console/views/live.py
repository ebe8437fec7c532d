"""The inbox and live alerts: the person's alerts as Server-Sent Events, relayed with their own token."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from services.console.deps import PostedForm, SignedIn
from services.console.upstream import ApiError, items_of
from services.console.views.common import uuid_of
from services.console.web import redirect, render

router = APIRouter(include_in_schema=False)


@router.get("/inbox", response_class=HTMLResponse)
async def inbox_page(caller: SignedIn) -> Response:
    alerts = items_of(await caller.api.get("notifications", "/v1/inbox", caller.token, language=caller.lang))
    return render(caller.request, "inbox.html", alerts=alerts)


@router.post("/inbox/{alert_id}/read")
async def inbox_read(alert_id: str, posted: PostedForm) -> Response:
    with contextlib.suppress(ApiError):
        await posted.api.post("notifications", f"/v1/inbox/{uuid_of(alert_id)}/read", posted.token,
                              language=posted.lang)
    return redirect("/inbox")


@router.get("/events")
async def live_events(caller: SignedIn) -> Response:
    """The person's alerts as Server-Sent Events, relayed from the notifications service with their token."""
    token, lang, api = caller.token, caller.lang, caller.api
    last = caller.request.headers.get("last-event-id", "")
    headers = {"Last-Event-ID": last} if last.isdigit() and len(last) < 20 else {}

    async def relay() -> AsyncIterator[bytes]:
        try:
            async with api.stream("notifications", "/v1/inbox/stream", token, language=lang,
                                  headers=headers) as response:
                if response.status_code != 200:
                    # Tell the page to stop retrying too fast; it retries after `retry`.
                    yield b"retry: 30000\nevent: unavailable\ndata: {}\n\n"
                    return
                yield b"retry: 3000\nevent: ready\ndata: {}\n\n"
                async for chunk in response.aiter_raw():
                    yield chunk
        except httpx.HTTPError:
            yield b"retry: 10000\n\n"

    return StreamingResponse(relay(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
