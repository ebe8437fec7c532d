"""Moving a case between municipalities and the coordinator's duplicate decisions (CONTRACT §10) for a
coordinator who has no integrated system: request a transfer from the case page, accept or decline an
incoming one, and decide on a possible duplicate (the same person, or not; undo)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from services.console.deps import Caller, PostedForm, SignedIn, require
from services.console.upstream import ApiError
from services.console.views.cases import case_page_with
from services.console.views.common import every_item, instant, listing, shown_status, uuid_of
from services.console.web import api_details, api_message, redirect, render

router = APIRouter(include_in_schema=False)
RELATIONS = ("same_person", "not_same_person")


@router.get("/transfers", response_class=HTMLResponse)
async def transfers_page(caller: SignedIn) -> Response:
    return await _transfers_page(caller)


async def _transfers_page(caller: Caller, status: int = 200, **extra: Any) -> Response:
    require(caller, "coordinator")

    async def direction(name: str) -> Any:
        try:
            return {"items": await every_item(caller, "intake", "/v1/transfers", {"direction": name})}
        except ApiError as error:
            return error

    incoming, outgoing = await direction("incoming"), await direction("outgoing")
    return render(caller.request, "transfers.html", status=status,
                  incoming=listing(incoming), outgoing=listing(outgoing), **extra)


@router.post("/transfers/{transfer_id}/accept")
async def accept_transfer(transfer_id: str, posted: PostedForm) -> Response:
    require(posted, "coordinator")
    tid = uuid_of(transfer_id)
    try:
        accepted = await posted.api.post("intake", f"/v1/transfers/{tid}/accept", posted.token,
                                         language=posted.lang)
    except ApiError as error:
        return await _refused(posted, error)
    return redirect(f"/cases/{uuid_of(str((accepted or {}).get('case_id') or ''))}")


@router.post("/transfers/{transfer_id}/decline")
async def decline_transfer(transfer_id: str, posted: PostedForm) -> Response:
    require(posted, "coordinator")
    tid = uuid_of(transfer_id)
    reason = str(posted.form.get("reason") or "").strip()
    try:
        await posted.api.post("intake", f"/v1/transfers/{tid}/decline", posted.token, language=posted.lang,
                              json={"reason": reason})
    except ApiError as error:
        return await _refused(posted, error)
    return redirect("/transfers")


async def _refused(posted: Caller, error: ApiError) -> Response:
    return await _transfers_page(posted, status=shown_status(error), error=api_message(posted.t, error),
                                 details=api_details(error))


@router.post("/cases/{case_id}/transfers")
async def request_transfer(case_id: str, posted: PostedForm) -> Response:
    """The survivor moved (or fled): the case goes to the receiving coordinator once she accepts."""
    require(posted, "coordinator")
    cid, form = uuid_of(case_id), posted.form
    body = {
        "to_municipality": str(form.get("to_municipality") or ""),
        "reason": str(form.get("reason") or "").strip(),
        "consent_given_at": instant(str(form.get("consent_given_at") or "")),
    }
    try:
        await posted.api.post("intake", f"/v1/cases/{cid}/transfers", posted.token, language=posted.lang,
                              json=body)
    except ApiError as error:
        return await case_page_with(posted, cid, error, "transfer")
    return redirect("/transfers")


@router.post("/cases/{case_id}/links")
async def decide_link(case_id: str, posted: PostedForm) -> Response:
    require(posted, "coordinator")
    cid = uuid_of(case_id)
    relation = str(posted.form.get("relation") or "")
    body = {"case_id": str(posted.form.get("other_case_id") or ""), "relation": relation}
    try:
        await posted.api.post("intake", f"/v1/cases/{cid}/links", posted.token, language=posted.lang, json=body)
    except ApiError as error:
        return await case_page_with(posted, cid, error, "links")
    return redirect(f"/cases/{cid}#duplicates-title")


@router.post("/cases/{case_id}/links/{other_id}/undo")
async def undo_link(case_id: str, other_id: str, posted: PostedForm) -> Response:
    require(posted, "coordinator")
    cid, other = uuid_of(case_id), uuid_of(other_id)
    try:
        await posted.api.delete("intake", f"/v1/cases/{cid}/links/{other}", posted.token, language=posted.lang)
    except ApiError as error:
        return await case_page_with(posted, cid, error, "links")
    return redirect(f"/cases/{cid}#duplicates-title")
