"""Reporting a case through the whole form of CONTRACT §5, with the risk screen's questions in words; one
idempotency key per form, so a double click or a resubmitted form creates one case."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from services.console.deps import Caller, PostedForm, SignedIn, require
from services.console.i18n import zone
from services.console.upstream import ApiError
from services.console.views.common import instant, shown_status
from services.console.web import INSTITUTION_ROLES, api_details, api_message, new_key, redirect, render

router = APIRouter(include_in_schema=False)

REPORTERS = (*INSTITUTION_ROLES, "coordinator")
SOURCES = ("police", "social_services", "child_protection", "health", "education", "ngo", "self_referral",
           "hotline", "other")
SEXES = ("female", "male", "other")
ETHNICITIES = ("albanian", "roma", "egyptian", "ashkali", "serbian", "montenegrin", "bosniak", "greek",
               "macedonian", "other", "undisclosed")
VIOLENCE = ("physical", "psychological", "sexual", "economic", "stalking")
RELATIONSHIPS = ("spouse", "ex_spouse", "partner", "ex_partner", "parent", "child", "sibling", "other_family",
                 "other")
NEEDS = ("shelter", "legal_aid", "health", "psychological", "economic_aid", "employment", "housing", "childcare",
         "protection_order")
KINDS = ("police", "social_services", "child_protection", "health", "education", "employment", "legal_aid", "ngo",
         "shelter", "housing", "prosecution", "court")
CHILD_ROWS = 4




async def _risk_questions(caller: Caller) -> list[dict[str, Any]]:
    try:
        screen = await caller.api.get("intake", "/v1/risk-screen", caller.token, language=caller.lang)
        return [q for q in (screen or {}).get("questions", []) if isinstance(q, dict)]
    except ApiError:
        from services.intake.domain import DEFAULT_QUESTIONS

        return [{"id": qid, "red_flag": red} for qid, red in DEFAULT_QUESTIONS]


def _report_context(caller: Caller) -> dict[str, Any]:
    now = datetime.now(zone()).strftime("%Y-%m-%dT%H:%M")
    return {
        "sources": SOURCES, "sexes": SEXES, "ethnicities": ETHNICITIES, "violence": VIOLENCE,
        "relationships": RELATIONSHIPS, "needs": NEEDS, "kinds": KINDS, "child_rows": range(CHILD_ROWS),
        "now": now, "default_source": caller.role if caller.role in SOURCES else "other",
    }


@router.get("/report", response_class=HTMLResponse)
async def report_form(caller: SignedIn) -> Response:
    require(caller, *REPORTERS)
    questions = await _risk_questions(caller)
    return render(caller.request, "report.html", questions=questions, form=None, form_key=new_key(),
                  **_report_context(caller))


def report_body(form: Any, municipality: str, questions: list[dict[str, Any]], coordinator: bool) -> dict[str, Any]:
    def text(name: str) -> str | None:
        value = str(form.get(name) or "").strip()
        return value or None

    survivor: dict[str, Any] = {
        "first_name": text("first_name"), "last_name": text("last_name"), "sex": text("sex"),
        "date_of_birth": text("date_of_birth"), "ethnicity": text("ethnicity"), "phone": text("phone"),
        "address": text("address"), "disability": form.get("disability") == "on",
    }
    age = text("age")
    if age is not None:
        survivor["age"] = int(age) if age.isdigit() and len(age) < 4 else age
    children = []
    for index in range(CHILD_ROWS):
        sex, child_age = text(f"child_{index}_sex"), text(f"child_{index}_age")
        if sex or child_age:
            children.append({"sex": sex, "age": int(child_age) if child_age and child_age.isdigit()
                             and len(child_age) < 4 else child_age})
    body: dict[str, Any] = {
        "municipality": municipality,
        "source": text("source"),
        "survivor": {k: v for k, v in survivor.items() if v is not None},
        "children": children,
        "incident": {k: v for k, v in {
            "occurred_at": instant(text("occurred_at") or ""),
            "violence_types": form.getlist("violence_types"),
            "perpetrator_relationship": text("perpetrator_relationship"),
            "description": text("description"),
        }.items() if v is not None},
        "needs": form.getlist("needs"),
        "risk_answers": {str(q["id"]): form.get(f"risk_{q['id']}") == "yes" for q in questions},
    }
    share_with = form.getlist("share_with")
    if share_with:
        body["consent"] = {"share_with": share_with, "given_at": instant(text("consent_given_at") or "")}
    if coordinator and text("reported_at"):
        body["reported_at"] = instant(text("reported_at") or "")
    return body


@router.post("/report")
async def report_submit(posted: PostedForm) -> Response:
    require(posted, *REPORTERS)
    form = posted.form
    questions = await _risk_questions(posted)
    body = report_body(form, posted.municipality, questions, posted.role == "coordinator")
    key = str(form.get("form_key") or "")[:64] or new_key()
    try:
        created = await posted.api.post("intake", "/v1/cases", posted.token, language=posted.lang, json=body,
                                        headers={"Idempotency-Key": key})
    except ApiError as error:
        return render(posted.request, "report.html", status=shown_status(error), questions=questions, form=form,
                      form_key=new_key(), error=api_message(posted.t, error), details=api_details(error),
                      **_report_context(posted))
    return redirect(f"/cases/{created['id']}")
