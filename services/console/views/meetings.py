"""ETN meetings: scheduled, held (a past date), and minutes whose decisions become case-plan actions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from services.console.deps import Caller, PostedForm, SignedIn, require
from services.console.i18n import zone
from services.console.upstream import ApiError, items_of
from services.console.views.common import every_item, instant, uuid_of
from services.console.web import api_details, api_message, redirect, render

router = APIRouter(include_in_schema=False)


@router.get("/meetings", response_class=HTMLResponse)
async def meetings_page(caller: SignedIn) -> Response:
    return await _meetings_page(caller)


async def _meetings_page(caller: Caller, **extra: Any) -> Response:
    require(caller, "coordinator")
    today = datetime.now(UTC).date()
    api, token, lang = caller.api, caller.token, caller.lang
    meetings = await every_item(caller, "referral", "/v1/etn-meetings",
                                {"from": (today - timedelta(days=90)).isoformat(),
                                 "to": (today + timedelta(days=180)).isoformat()})
    members = await every_item(caller, "referral", "/v1/members")
    cases = items_of(await api.get("intake", "/v1/cases", token, language=lang,
                                   params={"status": "open", "limit": 100}))
    return render(caller.request, "meetings.html", meetings=meetings, members=members, cases=cases,
                  case_numbers={str(c.get("id")): c.get("case_number") for c in cases},
                  member_names={str(m.get("id")): m.get("name") for m in members},
                  now=datetime.now(zone()).strftime("%Y-%m-%dT%H:%M"), **extra)


@router.post("/meetings")
async def schedule_meeting(posted: PostedForm) -> Response:
    require(posted, "coordinator")
    form = posted.form
    case_numbers = [c.strip() for c in str(form.get("case_ids") or "").replace(",", " ").split() if c.strip()]
    body = {
        "municipality": posted.municipality,
        "kind": str(form.get("kind") or "etn"),
        "scheduled_for": instant(str(form.get("scheduled_for") or "")),
        "case_ids": case_numbers,
        "member_ids": form.getlist("member_ids"),
    }
    try:
        await posted.api.post("referral", "/v1/etn-meetings", posted.token, language=posted.lang, json=body)
    except ApiError as error:
        return await _meetings_page(posted, error=api_message(posted.t, error), details=api_details(error))
    return redirect("/meetings")


@router.post("/meetings/{meeting_id}/minutes")
async def meeting_minutes(meeting_id: str, posted: PostedForm) -> Response:
    require(posted, "coordinator")
    form = posted.form
    decision = {
        "case_id": str(form.get("case_id") or ""),
        "action": str(form.get("action") or "").strip(),
        "responsible_member_id": str(form.get("responsible_member_id") or ""),
        "due_date": str(form.get("due_date") or ""),
    }
    body = {"attended_member_ids": form.getlist("attended_member_ids"),
            "decisions": [decision] if decision["action"] else []}
    try:
        await posted.api.post("referral", f"/v1/etn-meetings/{uuid_of(meeting_id)}/minutes", posted.token,
                              language=posted.lang, json=body)
    except ApiError as error:
        return await _meetings_page(posted, error=api_message(posted.t, error), details=api_details(error))
    return redirect("/meetings")
