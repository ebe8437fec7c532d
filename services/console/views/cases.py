"""The coordinator's case search (a name never goes into a URL), the case page and a manual referral."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from services.console.deps import Caller, PostedForm, SignedIn, require
from services.console.i18n import zone
from services.console.upstream import ApiError, items_of
from services.console.views.common import URGENCIES, every_item, listing, nothing, shown_status, uuid_of
from services.console.web import api_details, api_message, new_key, redirect, render

router = APIRouter(include_in_schema=False)
AUDIT_SHOWN = 50  # the case page shows the latest entries of its audit trail (the API lists oldest first)


@router.get("/cases", response_class=HTMLResponse)
async def cases_page(caller: SignedIn) -> Response:
    require(caller, "coordinator")
    return await _case_search(caller, {})


@router.post("/cases", response_class=HTMLResponse)
async def cases_search(posted: PostedForm) -> Response:
    """A search by name is a POST: a survivor's name never goes into a URL (CONTRACT §11)."""
    require(posted, "coordinator")
    criteria = {key: str(posted.form.get(key) or "").strip()[:200] for key in ("q", "status", "risk_level", "cursor")}
    return await _case_search(posted, criteria)


async def _case_search(caller: Caller, criteria: dict[str, str]) -> Response:
    try:
        page = await caller.api.get("intake", "/v1/cases", caller.token, language=caller.lang,
                                    params={**criteria, "limit": 50})
    except ApiError as error:
        return render(caller.request, "cases.html", status=shown_status(error), cases=[], next_cursor=None,
                      criteria=criteria, error=api_message(caller.t, error), details=api_details(error))
    return render(caller.request, "cases.html", cases=items_of(page), next_cursor=(page or {}).get("next_cursor"),
                  criteria=criteria)


@router.get("/cases/{case_id}", response_class=HTMLResponse)
async def case_page(case_id: str, caller: SignedIn) -> Response:
    return await _case_page(caller, case_id)


async def _case_page(caller: Caller, case_id: str, **extra: Any) -> Response:
    cid = uuid_of(case_id)

    async def part(service: str, path: str, params: dict[str, Any] | None = None) -> Any:
        try:
            return await caller.api.get(service, path, caller.token, language=caller.lang,  # type: ignore[arg-type]
                                        params=params)
        except ApiError as error:
            return error

    async def gathered(service: str, path: str, params: dict[str, Any] | None = None) -> Any:
        try:
            return {"items": await every_item(caller, service, path, params)}
        except ApiError as error:
            return error

    coordinator = caller.role == "coordinator"
    case, referrals, plan, placements, audit, members, applications = await asyncio.gather(
        caller.api.get("intake", f"/v1/cases/{cid}", caller.token, language=caller.lang),
        gathered("referral", "/v1/referrals", {"case_id": cid}),
        part("referral", f"/v1/cases/{cid}/plan") if coordinator else nothing(),
        part("shelter", "/v1/placements", {"case_id": cid}) if coordinator else nothing(),
        gathered("intake", "/v1/audit", {"case_id": cid}) if coordinator else nothing(),
        gathered("referral", "/v1/members") if coordinator else nothing(),
        part("shelter", "/v1/rent-bonus/applications", {"case_id": cid}) if coordinator else nothing(),
    )
    member_list = listing(members)
    return render(
        caller.request, "case.html", case=case,
        referrals=listing(referrals), plan=plan if isinstance(plan, dict) else None,
        placements=listing(placements), audit=listing(audit)[-AUDIT_SHOWN:], members=member_list,
        applications=[a for a in listing(applications) if a.get("case_id") == cid],
        member_names={str(m.get("id")): m.get("name") for m in member_list},
        urgencies=URGENCIES, form_key=new_key(), destinations=_destinations(caller),
        now=datetime.now(zone()).strftime("%Y-%m-%dT%H:%M"), **extra,
    )


def _destinations(caller: Caller) -> list[str]:
    """Where a case may move: the country profile's other municipalities."""
    country = caller.request.app.state.settings.country
    return [m for m in country.municipalities if m != caller.municipality]


async def case_page_with(caller: Caller, case_id: str, error: ApiError, part: str) -> Response:
    """The case page again, the service's refusal shown beside the form (`part`) that was sent."""
    return await _case_page(caller, case_id, status=shown_status(error),
                            **{f"{part}_error": api_message(caller.t, error), f"{part}_details": api_details(error)})


@router.post("/cases/{case_id}/referrals")
async def manual_referral(case_id: str, posted: PostedForm) -> Response:
    require(posted, "coordinator")
    form = posted.form
    cid = uuid_of(case_id)
    body: dict[str, Any] = {
        "case_id": cid,
        "to_member_id": str(form.get("to_member_id") or ""),
        "urgency": str(form.get("urgency") or "normal"),
        "service": str(form.get("service") or "").strip() or None,
        "note": str(form.get("note") or "").strip() or None,
        "consent_override_reason": str(form.get("consent_override_reason") or "").strip() or None,
    }
    try:
        await posted.api.post("referral", "/v1/referrals", posted.token, language=posted.lang,
                              json={k: v for k, v in body.items() if v is not None})
    except ApiError as error:
        return await _case_page(posted, case_id, referral_error=api_message(posted.t, error),
                                referral_details=api_details(error))
    return redirect(f"/cases/{cid}")
