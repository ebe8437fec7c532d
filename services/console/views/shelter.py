"""A shelter's pages, made for a phone: its free beds (a concurrent change is shown, not overwritten),
placements started and ended, the referrals to it, and one case as the shelter may see it (CONTRACT §2:
shelter staff never read intake records — case number, counts and needs only)."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from services.console.deps import Caller, PostedForm, SignedIn, require
from services.console.i18n import zone
from services.console.upstream import ApiError
from services.console.views.common import every_item, uuid_of, whole
from services.console.web import api_details, api_message, redirect, render

router = APIRouter(include_in_schema=False)

PLACEABLE = ("pending", "acknowledged", "accepted")


def _context(referrals: list[dict[str, Any]], placements: list[dict[str, Any]]) -> dict[str, Any]:
    """The referrals a placement may start from: open ones whose case has no active placement here."""
    placed = {str(p.get("case_id")) for p in placements if not p.get("ended_at")}
    placeable = [r for r in referrals if r.get("status") in PLACEABLE and str(r.get("case_id")) not in placed]
    default_until = (datetime.now(zone()).date() + timedelta(days=30)).isoformat()
    return {"placeable": placeable, "default_until": default_until}


async def _referrals(caller: Caller, statuses: tuple[str, ...] = (), **params: str) -> list[dict[str, Any]]:
    """The shelter's referrals (of `statuses`, else all), every page (the API lists oldest first)."""
    found: list[dict[str, Any]] = []
    with contextlib.suppress(ApiError):
        for status in statuses or (None,):
            found += await every_item(caller, "referral", "/v1/referrals", {**params, "status": status})
    return found


async def shelter_home(caller: Caller, status_code: int = 200, **extra: Any) -> Response:
    if not caller.session.shelter_id:
        return render(caller.request, "message.html", status=403,
                      message=caller.t.gettext("Your sign-in names no shelter."), details=[], back=None)
    shelter_id = uuid_of(caller.session.shelter_id)
    answer = await caller.api.call("shelter", "GET", f"/v1/shelters/{shelter_id}", caller.token,
                                   language=caller.lang)
    placements = await every_item(caller, "shelter", "/v1/placements", {"shelter_id": shelter_id, "active": "true"})
    referrals = await _referrals(caller, PLACEABLE)
    return render(caller.request, "shelter.html", status=status_code, shelter=answer.data,
                  etag=answer.headers.get("etag", ""), placements=placements, referrals=referrals,
                  **_context(referrals, placements), **extra)


@router.post("/shelter/availability")
async def shelter_availability(posted: PostedForm) -> Response:
    t = posted.t
    shelter_id = str(posted.form.get("shelter_id") or posted.session.shelter_id or "")
    raw = str(posted.form.get("free_beds") or "").strip()
    if not raw.isdigit():
        return await shelter_home(posted, status_code=422, error=t.gettext("Free beds must be a whole number."))
    try:
        await posted.api.call(
            "shelter", "PUT", f"/v1/shelters/{uuid_of(shelter_id)}/availability", posted.token,
            language=posted.lang, json={"free_beds": int(raw)},
            headers={"If-Match": str(posted.form.get("etag") or "")},
        )
    except ApiError as error:
        if error.status == 412:
            return await shelter_home(
                posted, status_code=409, conflict=int(raw),
                error=t.gettext("Someone else changed the free beds meanwhile. The current number is shown; your value was not saved."),  # noqa: E501
            )
        return await shelter_home(posted, status_code=error.status if error.status < 500 else 502,
                                  error=api_message(t, error), details=api_details(error))
    if posted.role == "coordinator":
        return redirect("/")
    return await shelter_home(posted, saved=True)


def _back(posted: PostedForm) -> str:
    case_id = str(posted.form.get("case_id") or "")
    return f"/shelter/cases/{uuid_of(case_id)}" if posted.form.get("back") == "case" and case_id else "/"


@router.post("/placements")
async def start_placement(posted: PostedForm) -> Response:
    """Beds taken for a referred case: adults, children and the planned end (409 when too few are free)."""
    require(posted, "shelter_staff")
    form = posted.form
    body = {
        "case_id": uuid_of(str(form.get("case_id") or "")),
        "shelter_id": uuid_of(posted.session.shelter_id or ""),
        "adults": whole(form.get("adults")),
        "children": whole(form.get("children")) or 0,
        "planned_until": str(form.get("planned_until") or "").strip(),
    }
    try:
        await posted.api.post("shelter", "/v1/placements", posted.token, language=posted.lang, json=body)
    except ApiError as error:
        return await _refused(posted, error)
    return redirect(_back(posted))


@router.post("/placements/{placement_id}/discharge")
async def discharge(placement_id: str, posted: PostedForm) -> Response:
    require(posted, "shelter_staff", "coordinator")
    reason = str(posted.form.get("reason") or "").strip()
    try:
        await posted.api.post("shelter", f"/v1/placements/{uuid_of(placement_id)}/discharge", posted.token,
                              language=posted.lang, json={"reason": reason})
    except ApiError as error:
        return await _refused(posted, error)
    return redirect(_back(posted))


async def _refused(posted: PostedForm, error: ApiError) -> Response:
    status = error.status if error.status < 500 else 502
    message, details = api_message(posted.t, error), api_details(error)
    if posted.form.get("back") == "case" and posted.form.get("case_id"):
        return await _shelter_case(posted, str(posted.form.get("case_id")), status, error=message, details=details)
    if posted.role != "shelter_staff":
        return render(posted.request, "message.html", status=status, message=message, details=details, back="/")
    return await shelter_home(posted, status_code=status, error=message, details=details)


@router.get("/shelter/cases/{case_id}", response_class=HTMLResponse)
async def shelter_case(case_id: str, caller: SignedIn) -> Response:
    """Where a shelter's alert about a case leads: its referrals to this shelter and its placements here."""
    return await _shelter_case(caller, case_id)


async def _shelter_case(caller: Caller, case_id: str, status: int = 200, **extra: Any) -> Response:
    require(caller, "shelter_staff")
    cid = uuid_of(case_id)
    params = {"case_id": cid, "shelter_id": uuid_of(caller.session.shelter_id or "")}
    placements = await every_item(caller, "shelter", "/v1/placements", params)
    referrals = await _referrals(caller, case_id=cid)
    if not placements and not referrals:
        return render(caller.request, "message.html", status=404,
                      message=caller.t.gettext("Not found, or not visible to you."), details=[], back="/")
    number = next((x.get("case_number") for x in [*referrals, *placements] if x.get("case_number")), "")
    return render(caller.request, "shelter_case.html", status=status, case_id=cid, case_number=number,
                  placements=placements, referrals=referrals, **_context(referrals, placements), **extra)
