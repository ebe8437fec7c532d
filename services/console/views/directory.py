"""The directory of members and shelters (anyone of the municipality reads it)."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from services.console.deps import Caller, SignedIn
from services.console.upstream import ApiError, items_of
from services.console.views.common import every_item
from services.console.web import render

router = APIRouter(include_in_schema=False)


@router.get("/directory", response_class=HTMLResponse)
async def directory_page(caller: SignedIn) -> Response:
    return await _directory(caller)


async def _directory(caller: Caller) -> Response:
    members = await every_item(caller, "referral", "/v1/members")
    shelters: list[dict[str, Any]] = []
    with contextlib.suppress(ApiError):
        shelters = items_of(await caller.api.get("shelter", "/v1/shelters", caller.token, language=caller.lang))
    return render(caller.request, "directory.html", members=members, shelters=shelters,
                  rules_link=caller.role == "coordinator")
