"""The housing office: rent-bonus applications, decisions with the year's remaining budget in view, payments
due with a pay button, and budgets per year (the coordinator reads them)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from services.console.deps import Caller, PostedForm, SignedIn, require
from services.console.i18n import zone
from services.console.upstream import ApiError, items_of
from services.console.views.common import every_item, shown_status, uuid_of, whole
from services.console.web import api_details, api_message, render

router = APIRouter(include_in_schema=False)

READERS = ("coordinator", "housing_officer")


async def _budget(caller: Caller, year: int) -> dict[str, Any] | None:
    with contextlib.suppress(ApiError):
        data = await caller.api.get("shelter", f"/v1/rent-bonus/budgets/{caller.municipality}/{year}",
                                    caller.token, language=caller.lang)
        return data if isinstance(data, dict) else None
    return None


DETAILED = 100  # applications shown with their payments and decision


async def _applications(caller: Caller, case_id: str | None) -> list[dict[str, Any]]:
    params = {"case_id": case_id} if case_id else {}
    # Every pending application (each awaits a decision), then the newest of the others (the API lists newest first).
    pending = await every_item(caller, "shelter", "/v1/rent-bonus/applications", {**params, "status": "pending"})
    newest = items_of(await caller.api.get("shelter", "/v1/rent-bonus/applications", caller.token,
                                           language=caller.lang, params=params))
    seen = {str(a.get("id")) for a in pending}
    listed = pending + [a for a in newest if str(a.get("id")) not in seen]
    if case_id:
        listed = [a for a in listed if str(a.get("case_id")) == case_id]

    async def detailed(application: dict[str, Any]) -> dict[str, Any]:
        with contextlib.suppress(ApiError):
            return dict(await caller.api.get("shelter", f"/v1/rent-bonus/applications/{application['id']}",
                                             caller.token, language=caller.lang))
        return application

    return list(await asyncio.gather(*(detailed(a) for a in listed[:DETAILED])))


async def housing_home(caller: Caller, status: int = 200, case_id: str | None = None, **extra: Any) -> Response:
    year = datetime.now(zone()).year
    applications, budget = await asyncio.gather(_applications(caller, case_id), _budget(caller, year))
    due = [(a, p) for a in applications for p in a.get("payments") or [] if p.get("status") == "due"]
    due.sort(key=lambda pair: str(pair[1].get("month")))
    return render(caller.request, "housing.html", status=status, applications=applications, due=due,
                  budget=budget, year=year, this_month=datetime.now(zone()).strftime("%Y-%m"),
                  case_id=case_id, **extra)


@router.get("/rent-bonus", response_class=HTMLResponse)
async def rent_bonus_page(caller: SignedIn) -> Response:
    require(caller, *READERS)
    return await housing_home(caller)


@router.get("/rent-bonus/cases/{case_id}", response_class=HTMLResponse)
async def rent_bonus_case(case_id: str, caller: SignedIn) -> Response:
    """Where a housing office's alert about a case leads: that case's applications and payments."""
    require(caller, *READERS)
    return await housing_home(caller, case_id=uuid_of(case_id))


@router.post("/rent-bonus/payments/{payment_id}/pay")
async def pay(payment_id: str, posted: PostedForm) -> Response:
    require(posted, "housing_officer")
    try:
        await posted.api.post("shelter", f"/v1/rent-bonus/payments/{uuid_of(payment_id)}/pay", posted.token,
                              language=posted.lang)
    except ApiError as error:
        return await housing_home(posted, shown_status(error), error=api_message(posted.t, error),
                                  details=api_details(error))
    return await housing_home(posted, notice=posted.t.gettext("The payment is recorded as paid."))


@router.post("/rent-bonus/applications/{application_id}/decision")
async def decide(application_id: str, posted: PostedForm) -> Response:
    require(posted, "housing_officer")
    form = posted.form
    approved = form.get("approved") == "true"
    body: dict[str, Any] = {"approved": approved, "reason": str(form.get("reason") or "").strip() or None}
    if approved:
        body.update({"monthly_amount": str(form.get("monthly_amount") or "").strip(),
                     "start_month": str(form.get("start_month") or "").strip(),
                     "months": whole(form.get("months"))})
    body = {k: v for k, v in body.items() if v not in (None, "")}
    try:
        await posted.api.post("shelter", f"/v1/rent-bonus/applications/{uuid_of(application_id)}/decision",
                              posted.token, language=posted.lang, json=body)
    except ApiError as error:
        return await housing_home(posted, shown_status(error), error=api_message(posted.t, error),
                                  details=api_details(error))
    return await housing_home(posted, notice=posted.t.gettext("The decision is recorded."))


def _year(value: Any, default: int) -> int:
    year = whole(value)
    return year if year is not None and 2000 <= year <= 2100 else default


@router.get("/rent-bonus/budgets", response_class=HTMLResponse)
async def budgets_page(caller: SignedIn) -> Response:
    return await _budgets_page(caller, _year(caller.request.query_params.get("year"), datetime.now(zone()).year))


async def _budgets_page(caller: Caller, year: int, status: int = 200, **extra: Any) -> Response:
    """The chosen year beside the one before and after: amount, committed, paid, remaining."""
    require(caller, *READERS)
    years = [year - 1, year, year + 1]
    budgets = await asyncio.gather(*(_budget(caller, y) for y in years))
    return render(caller.request, "budgets.html", status=status, year=year, rows=list(zip(years, budgets, strict=True)),
                  chosen=budgets[1], **extra)


@router.post("/rent-bonus/budgets")
async def set_budget(posted: PostedForm) -> Response:
    require(posted, "housing_officer")
    year = _year(posted.form.get("year"), datetime.now(zone()).year)
    amount = str(posted.form.get("amount") or "").strip()
    try:
        await posted.api.call("shelter", "PUT", f"/v1/rent-bonus/budgets/{posted.municipality}/{year}",
                              posted.token, language=posted.lang, json={"amount": amount})
    except ApiError as error:
        return await _budgets_page(posted, year, shown_status(error), error=api_message(posted.t, error),
                                   details=api_details(error))
    return await _budgets_page(posted, year, notice=posted.t.gettext("The budget is saved."))
