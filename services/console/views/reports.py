"""Reports with charts rendered server-side as SVG, and the CSV for the national register."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from services.console import charts
from services.console.deps import Caller, SignedIn, require
from services.console.i18n import zone
from services.console.upstream import ApiError
from services.console.views.common import shown_status
from services.console.web import api_details, api_message, render

router = APIRouter(include_in_schema=False)

READERS = ("coordinator", "auditor")


def _period(form: Any) -> tuple[str, str]:
    today = datetime.now(zone()).date()
    start = str(form.get("from") or "") if form is not None else ""
    end = str(form.get("to") or "") if form is not None else ""
    try:
        date.fromisoformat(start)
    except ValueError:
        start = date(today.year, 1, 1).isoformat()
    try:
        date.fromisoformat(end)
    except ValueError:
        end = today.isoformat()
    return start, end


@router.get("/reports", response_class=HTMLResponse)
async def reports_page(caller: SignedIn) -> Response:
    require(caller, *READERS)
    start, end, params = _params(caller)
    try:
        summary = await caller.api.get("referral", "/v1/reports/summary", caller.token, language=caller.lang,
                                       params=params)
    except ApiError as error:
        return render(caller.request, "reports.html", status=shown_status(error), summary=None, charts=[],
                      start=start, end=end, error=api_message(caller.t, error), details=api_details(error))
    months = await _cases_by_month(caller, start, end, params.get("municipality"))
    return render(caller.request, "reports.html", summary=summary,
                  charts=charts.summary_charts(summary, caller.t, months), start=start, end=end)


def _params(caller: Caller) -> tuple[str, str, dict[str, str]]:
    start, end = _period(caller.request.query_params)
    params = {"from": start, "to": end}
    if caller.municipality == "*":
        params["municipality"] = str(caller.request.query_params.get("municipality") or "*")[:64]
    return start, end, params


async def _cases_by_month(
    caller: Caller, start: str, end: str, municipality: str | None
) -> list[tuple[str, int | None]]:
    """Cases per month of the period (at most its last 12 months), one summary call per month."""
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    spans: list[tuple[str, date, date]] = []
    cursor = date(last.year, last.month, 1)
    while cursor >= date(first.year, first.month, 1) and len(spans) < 12:
        following = date(cursor.year + cursor.month // 12, cursor.month % 12 + 1, 1)
        spans.append((cursor.strftime("%Y-%m"), max(cursor, first), min(following - timedelta(days=1), last)))
        cursor = date(cursor.year - (cursor.month == 1), (cursor.month - 2) % 12 + 1, 1)
    api, token, lang = caller.api, caller.token, caller.lang

    async def count(span: tuple[str, date, date]) -> tuple[str, int | None]:
        params = {"from": span[1].isoformat(), "to": span[2].isoformat(), "municipality": municipality}
        try:
            data = await api.get("referral", "/v1/reports/summary", token, language=lang, params=params)
        except ApiError:
            return span[0], None
        total = ((data or {}).get("cases") or {}).get("total")
        return span[0], total if isinstance(total, int) else None

    return list(await asyncio.gather(*(count(span) for span in reversed(spans))))


@router.get("/reports/cases.csv")
async def reports_csv(caller: SignedIn) -> Response:
    require(caller, *READERS)
    start, end, params = _params(caller)
    answer = await caller.api.call("referral", "GET", "/v1/reports/cases.csv", caller.token, language=caller.lang,
                                   params=params)
    return Response(
        answer.data if isinstance(answer.data, str) else "", media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="cases-{start}-{end}.csv"',
                 "Cache-Control": "no-store"},
    )
