"""Small helpers the pages share: ids from paths, form values, API refusals as statuses."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from services.console.i18n import zone
from services.console.upstream import ApiError, items_of
from shared.errors import Problem

URGENCIES = ("emergency", "high", "normal")
# The largest page the services give (`shared.paging.MAX_LIMIT`): lists on a page ask for it, not the default 50.
LIST_LIMIT = 200
# How many items a page gathers by following `next_cursor` (every list of the API pages, oldest first).
MAX_ITEMS = 2000


def uuid_of(value: str) -> str:
    """A path id as a UUID; anything else is 404 (nothing is sent upstream)."""
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise Problem(404, "Not found.") from exc


def instant(value: str) -> str | None:
    """A `datetime-local` value, read in the profile's timezone, as RFC 3339 with its offset."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value  # the service refuses it with a clear message
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone())
    return moment.isoformat()


def whole(value: Any) -> int | None:
    text = str(value or "").strip()
    return int(text) if text.isdigit() and len(text) < 9 else None


def shown_status(error: ApiError) -> int:
    """The status a page shows for a refusal: the service's 4xx, or 502 when the service failed."""
    return error.status if error.status < 500 else 502


def listing(value: Any) -> list[dict[str, Any]]:
    if value is None or isinstance(value, ApiError):
        return []
    return items_of(value)


async def nothing() -> None:
    return None


async def every_item(
    caller: Any, service: str, path: str, params: dict[str, Any] | None = None, *, cap: int = MAX_ITEMS,
    page_size: int | None = None,
) -> list[dict[str, Any]]:
    """Every item of a list, page after page (`next_cursor`), up to `cap`: a page that needs the whole
    list (an institution's open referrals, the members a form offers) never stops at the first page."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await caller.api.get(service, path, caller.token, language=caller.lang,
                                    params={**(params or {}), "limit": page_size or LIST_LIMIT, "cursor": cursor})
        items += items_of(page)
        cursor = page.get("next_cursor") if isinstance(page, dict) else None
        if not cursor or len(items) >= cap:
            return items[:cap]
