"""The console's pages, gathered from one module per role or area (`services/console/views/`)."""

from __future__ import annotations

from fastapi import APIRouter

from services.console.views import (
    cases,
    directory,
    home,
    housing,
    institution,
    live,
    meetings,
    report_form,
    reports,
    routing,
    shelter,
    signin,
    transfers,
)

router = APIRouter(include_in_schema=False)
for module in (signin, home, institution, shelter, housing, cases, report_form, live, reports, meetings, directory,
               routing, transfers):
    # The routes themselves (not an included router): one flat table, which the CSRF test walks.
    router.routes.extend(module.router.routes)
