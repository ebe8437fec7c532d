"""Each role's home at `/`: the coordinator's dashboard, an institution's queue, a shelter's beds, the housing
office's applications and payments; the auditor's reports, the admin's directory."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from services.console.deps import Caller, SignedIn
from services.console.views import directory, housing, institution, reports, shelter
from services.console.web import INSTITUTION_ROLES, render

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def home(caller: SignedIn) -> Response:
    role = caller.role
    if role == "coordinator":
        return await dashboard(caller)
    if role in INSTITUTION_ROLES:
        return await institution.referral_queue(caller)
    if role == "shelter_staff":
        return await shelter.shelter_home(caller)
    if role == "housing_officer":
        return await housing.housing_home(caller)
    if role == "auditor":
        return await reports.reports_page(caller)
    return await directory.directory_page(caller)


async def dashboard(caller: Caller) -> Response:
    data = await caller.api.get("referral", "/v1/dashboard", caller.token, language=caller.lang)
    return render(caller.request, "dashboard.html", data=data)
