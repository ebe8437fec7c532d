"""An institution's referral queue (acknowledge, accept, decline, complete; cancel by the sender or the
coordinator) and its plan actions (list and complete)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from services.console.deps import Caller, PostedForm, SignedIn, require
from services.console.upstream import ApiError, items_of
from services.console.views.common import every_item, shown_status, uuid_of
from services.console.web import INSTITUTION_ROLES, api_details, api_message, redirect, render
from shared.errors import Problem

router = APIRouter(include_in_schema=False)

REFERRAL_ACTIONS = ("acknowledge", "accept", "decline", "complete", "cancel")
OPEN = ("pending", "acknowledged", "accepted")
CLOSED = ("completed", "declined", "cancelled")
CLOSED_SHOWN = 50  # the queue shows the latest closed referrals under the open ones
# The plan-actions page shows the first this many actions by due date (the API's largest page).
PLAN_ACTIONS = 200


async def _my_referrals(caller: Caller) -> list[dict[str, Any]]:
    """Every open referral (each open status followed page after page: the API lists oldest first, so a
    first page would hide the newest once an institution has had a few hundred), and the latest closed."""
    params: dict[str, Any] = {}
    if caller.session.member_id:
        params["to_member_id"] = caller.session.member_id
    found: list[dict[str, Any]] = []
    for status in OPEN:
        found += await every_item(caller, "referral", "/v1/referrals", {**params, "status": status})
    closed: list[dict[str, Any]] = []
    for status in CLOSED:
        closed += await every_item(caller, "referral", "/v1/referrals", {**params, "status": status})
    closed.sort(key=_last_change, reverse=True)
    return found + closed[:CLOSED_SHOWN]


def _last_change(referral: dict[str, Any]) -> str:
    history = referral.get("history") or [{}]
    return str(history[-1].get("at") or referral.get("created_at") or "")


async def referral_queue(caller: Caller, status: int = 200, **extra: Any) -> Response:
    referrals = await _my_referrals(caller)
    referrals.sort(key=lambda r: (r.get("status") not in OPEN, str(r.get("ack_due_at") or "")))
    return render(caller.request, "referrals.html", status=status, referrals=referrals, **extra)


@router.post("/referrals/{referral_id}/{action}")
async def referral_action(referral_id: str, action: str, posted: PostedForm) -> Response:
    if action not in REFERRAL_ACTIONS:
        raise Problem(404, "Not found.")
    form = posted.form
    body: dict[str, Any] = {}
    if action == "decline":
        body["reason"] = str(form.get("reason") or "").strip()
    if action == "complete":
        body["outcome"] = str(form.get("outcome") or "").strip()
    back = "/"
    if form.get("back") == "case" and form.get("case_id"):
        back = f"/cases/{uuid_of(str(form.get('case_id')))}"
    try:
        await posted.api.post("referral", f"/v1/referrals/{uuid_of(referral_id)}/{action}", posted.token,
                              language=posted.lang, json=body or None)
    except ApiError as error:
        if back != "/" or posted.role not in INSTITUTION_ROLES:
            return render(posted.request, "message.html", status=shown_status(error),
                          message=api_message(posted.t, error), details=api_details(error), back=back)
        return await referral_queue(posted, status=shown_status(error), error=api_message(posted.t, error),
                                    details=api_details(error))
    return redirect(back)


async def _plan_actions(caller: Caller) -> list[dict[str, Any]]:
    """The institution's plan actions across its cases (`GET /v1/plan-actions`), open ones first."""
    data = await caller.api.get("referral", "/v1/plan-actions", caller.token, language=caller.lang,
                                params={"limit": PLAN_ACTIONS})
    actions = items_of(data)
    actions.sort(key=lambda a: (a.get("status") != "open", str(a.get("due_date") or "")))
    return actions


@router.get("/plan-actions", response_class=HTMLResponse)
async def plan_actions_page(caller: SignedIn) -> Response:
    return await _plan_actions_page(caller)


async def _plan_actions_page(caller: Caller, status: int = 200, **extra: Any) -> Response:
    require(caller, *INSTITUTION_ROLES)
    return render(caller.request, "plan_actions.html", status=status, actions=await _plan_actions(caller), **extra)


@router.post("/plan-actions/{action_id}/complete")
async def complete_plan_action(action_id: str, posted: PostedForm) -> Response:
    require(posted, *INSTITUTION_ROLES, "coordinator")
    back = "/plan-actions"
    if posted.form.get("back") == "case" and posted.form.get("case_id"):
        back = f"/cases/{uuid_of(str(posted.form.get('case_id')))}"
    try:
        await posted.api.post("referral", f"/v1/plan-actions/{uuid_of(action_id)}/complete", posted.token,
                              language=posted.lang)
    except ApiError as error:
        if back != "/plan-actions":
            return render(posted.request, "message.html", status=shown_status(error),
                          message=api_message(posted.t, error), details=api_details(error), back=back)
        return await _plan_actions_page(posted, status=shown_status(error), error=api_message(posted.t, error),
                                        details=api_details(error))
    if back != "/plan-actions":
        return redirect(back)
    return await _plan_actions_page(posted, notice=posted.t.gettext("The action is marked as done."))
