"""The console's pages: sign-in, each role's home, cases, referrals, beds, rent bonus, inbox, reports."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from jose import jwt as jose_jwt

from services.console import charts
from services.console.i18n import LANGUAGES, TIMEZONE
from services.console.oidc import OidcClient, OidcError
from services.console.session import LANG_COOKIE, OIDC_COOKIE, Session
from services.console.upstream import ApiError, items_of
from services.console.web import (
    INSTITUTION_ROLES,
    ROLES,
    Forbidden,
    api_details,
    api_message,
    codec,
    current_session,
    language,
    new_key,
    read_form,
    redirect,
    render,
    set_session_cookie,
    settings_of,
    signed_in,
    translator,
    upstream,
)
from shared.auth import MUNICIPALITY_RE, TokenVerifier
from shared.errors import Problem
from shared.keys import issue_token

router = APIRouter(include_in_schema=False)

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
URGENCIES = ("emergency", "high", "normal")
CHILD_ROWS = 4


# --- sign-in -------------------------------------------------------------------------------------------


def _local_sign_in_enabled(request: Request) -> bool:
    return settings_of(request).environment == "development"


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> HTMLResponse:
    session = current_session(request)
    if session is None or session.signed_in:
        session = Session()
        return render(request, "login.html", new_session=session, local=_local_sign_in_enabled(request),
                      oidc=request.app.state.oidc is not None, roles=ROLES, error=None)
    return render(request, "login.html", local=_local_sign_in_enabled(request),
                  oidc=request.app.state.oidc is not None, roles=ROLES, error=None)


@router.post("/login/local")
async def login_local(request: Request) -> Response:
    if not _local_sign_in_enabled(request):
        raise Problem(404, "Not found.")
    form = await read_form(request)
    t = translator(request)
    role = str(form.get("role") or "")
    municipality = str(form.get("municipality") or "").strip().lower()
    member_id = str(form.get("member_id") or "").strip() or None
    shelter_id = str(form.get("shelter_id") or "").strip() or None
    errors = []
    if role not in ROLES:
        errors.append(t.gettext("Choose a role."))
    if not (MUNICIPALITY_RE.match(municipality) or (municipality == "*" and role == "auditor")):
        errors.append(t.gettext("The municipality must be a slug such as elbasan."))
    for value in (member_id, shelter_id):
        if value is not None and (len(value) > 64 or not value.replace("-", "").isalnum()):
            errors.append(t.gettext("An id holds only letters, digits and hyphens."))
    if errors:
        return render(request, "login.html", status=422, local=True, oidc=request.app.state.oidc is not None,
                      roles=ROLES, error=" ".join(errors), form=form)
    settings = settings_of(request)
    ttl = request.app.state.local_token_ttl
    token = issue_token(settings, role=role, municipality=municipality, member_id=member_id,
                        shelter_id=shelter_id, ttl=ttl)
    session = await _session_from_token(request, token, via="local")
    response = redirect("/")
    set_session_cookie(request, response, session)
    return response


async def _session_from_token(request: Request, token: str, *, via: str) -> Session:
    verifier: TokenVerifier = request.app.state.verifier
    principal = await verifier.verify(token)
    exp = int(jose_jwt.get_unverified_claims(token)["exp"])
    return Session(
        exp=exp, token=token, sub=principal.sub, role=principal.role.value, municipality=principal.municipality,
        member_id=principal.member_id, shelter_id=principal.shelter_id, via=via,
    )


def _redirect_uri(request: Request) -> str:
    base = settings_of(request).console_public_url
    if base:
        return base.rstrip("/") + "/auth/callback"
    return str(request.url_for("oidc_callback"))


@router.get("/auth/oidc")
async def oidc_start(request: Request) -> Response:
    client: OidcClient | None = request.app.state.oidc
    if client is None:
        raise Problem(404, "Not found.")
    try:
        url, transaction = await client.start(_redirect_uri(request))
    except OidcError:
        return render(request, "login.html", status=502, local=_local_sign_in_enabled(request), oidc=True,
                      roles=ROLES, error=translator(request).gettext("The identity provider cannot be reached."))
    response = redirect(url)
    response.set_cookie(
        OIDC_COOKIE, codec(request).seal({**transaction, "exp": int(time.time()) + 600}), max_age=600,
        path="/auth/callback", httponly=True, samesite="lax",
        secure=settings_of(request).environment != "development",
    )
    return response


@router.get("/auth/callback", name="oidc_callback")
async def oidc_callback(request: Request) -> Response:
    client: OidcClient | None = request.app.state.oidc
    if client is None:
        raise Problem(404, "Not found.")
    t = translator(request)
    transaction = codec(request).open(request.cookies.get(OIDC_COOKIE))
    state = request.query_params.get("state")
    code = request.query_params.get("code")
    failed = t.gettext("Sign-in failed. Please try again.")
    if (
        transaction is None
        or int(transaction.get("exp", 0)) < time.time()
        or not state
        or state != transaction.get("state")
        or not code
        or len(code) > 2048
    ):
        return render(request, "login.html", status=400, local=_local_sign_in_enabled(request), oidc=True,
                      roles=ROLES, error=failed)
    try:
        token = await client.finish(_redirect_uri(request), transaction, code)
        session = await _session_from_token(request, token, via="oidc")
    except (OidcError, Problem):
        return render(request, "login.html", status=400, local=_local_sign_in_enabled(request), oidc=True,
                      roles=ROLES, error=failed)
    # A page, not a redirect: the provider's redirect is cross-site, and the Strict session cookie set
    # here accompanies only the same-site navigation this page makes.
    response = render(request, "signed_in.html", new_session=session)
    response.delete_cookie(OIDC_COOKIE, path="/auth/callback")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await read_form(request)
    response = redirect("/login")
    set_session_cookie(request, response, Session())
    return response


@router.post("/language")
async def switch_language(request: Request) -> Response:
    form = await read_form(request)
    chosen = str(form.get("lang") or "")
    back = str(form.get("back") or "/")
    if not back.startswith("/") or back.startswith("//"):
        back = "/"
    response = redirect(back)
    if chosen in LANGUAGES:
        response.set_cookie(LANG_COOKIE, chosen, max_age=365 * 86400, path="/", httponly=True, samesite="strict",
                            secure=settings_of(request).environment != "development")
    return response


# --- homes -----------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    session = signed_in(request)
    role = session.role
    if role == "coordinator":
        return await _dashboard(request, session)
    if role in INSTITUTION_ROLES:
        return await _referral_queue(request, session)
    if role == "shelter_staff":
        return await _shelter_home(request, session)
    if role == "housing_officer":
        return await _housing_home(request, session)
    if role == "auditor":
        return await reports_page(request)
    return await directory_page(request)


async def _dashboard(request: Request, session: Session) -> Response:
    assert session.token
    data = await upstream(request).get("referral", "/v1/dashboard", session.token, language=language(request))
    return render(request, "dashboard.html", data=data)


async def _referral_queue(request: Request, session: Session, status: int = 200, **extra: Any) -> Response:
    assert session.token
    params = {"to_member_id": session.member_id} if session.member_id else {}
    referrals = items_of(await upstream(request).get("referral", "/v1/referrals", session.token,
                                                     language=language(request), params=params))
    actions: list[dict[str, Any]] = []
    referrals.sort(key=lambda r: (r.get("status") not in ("pending", "acknowledged", "accepted"),
                                  str(r.get("ack_due_at") or "")))
    return render(request, "referrals.html", status=status, referrals=referrals, actions=actions, **extra)


REFERRAL_ACTIONS = ("acknowledge", "accept", "decline", "complete", "cancel")


@router.post("/referrals/{referral_id}/{action}")
async def referral_action(request: Request, referral_id: str, action: str) -> Response:
    session = signed_in(request)
    form = await read_form(request)
    assert session.token
    t = translator(request)
    if action not in REFERRAL_ACTIONS:
        raise Problem(404, "Not found.")
    body: dict[str, Any] = {}
    reason = str(form.get("reason") or "").strip()
    outcome = str(form.get("outcome") or "").strip()
    if action == "decline":
        body["reason"] = reason
    if action == "complete":
        body["outcome"] = outcome
    back = "/cases/" + str(form.get("case_id")) if form.get("back") == "case" and form.get("case_id") else "/"
    try:
        await upstream(request).post("referral", f"/v1/referrals/{_uuid(referral_id)}/{action}", session.token,
                                     language=language(request), json=body or None)
    except ApiError as error:
        if back != "/" or session.role not in INSTITUTION_ROLES:
            return render(request, "message.html", status=error.status if error.status < 500 else 502,
                          message=api_message(t, error), details=api_details(error), back=back)
        return await _referral_queue(request, session, status=error.status if error.status < 500 else 502,
                                     error=api_message(t, error), details=api_details(error))
    return redirect(back)


def _uuid(value: str) -> str:
    import uuid

    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise Problem(404, "Not found.") from exc


async def _shelter_home(request: Request, session: Session, **extra: Any) -> Response:
    assert session.token
    api = upstream(request)
    lang = language(request)
    if not session.shelter_id:
        return render(request, "message.html", status=403,
                      message=translator(request).gettext("Your sign-in names no shelter."), details=[], back=None)
    answer = await api.call("shelter", "GET", f"/v1/shelters/{_uuid(session.shelter_id)}", session.token,
                            language=lang)
    placements = items_of(await api.get("shelter", "/v1/placements", session.token, language=lang,
                                        params={"shelter_id": session.shelter_id, "active": "true"}))
    referrals: list[dict[str, Any]] = []
    with contextlib.suppress(ApiError):
        referrals = items_of(await api.get("referral", "/v1/referrals", session.token, language=lang))
    return render(request, "shelter.html", shelter=answer.data, etag=answer.headers.get("etag", ""),
                  placements=placements, referrals=referrals, **extra)


@router.post("/shelter/availability")
async def shelter_availability(request: Request) -> Response:
    session = signed_in(request)
    form = await read_form(request)
    assert session.token
    t = translator(request)
    shelter_id = str(form.get("shelter_id") or session.shelter_id or "")
    raw = str(form.get("free_beds") or "").strip()
    if not raw.isdigit():
        return await _shelter_home(request, session, error=t.gettext("Free beds must be a whole number."))
    etag = str(form.get("etag") or "")
    try:
        await upstream(request).call(
            "shelter", "PUT", f"/v1/shelters/{_uuid(shelter_id)}/availability", session.token,
            language=language(request), json={"free_beds": int(raw)}, headers={"If-Match": etag},
        )
    except ApiError as error:
        if error.status == 412:
            return await _shelter_home(
                request, session, status_code=409, conflict=int(raw),
                error=t.gettext("Someone else changed the free beds meanwhile. The current number is shown; your value was not saved."),  # noqa: E501
            )
        return await _shelter_home(request, session, error=api_message(t, error), details=api_details(error))
    if session.role == "coordinator":
        return redirect("/")
    return await _shelter_home(request, session, saved=True)


@router.post("/placements/{placement_id}/discharge")
async def discharge(request: Request, placement_id: str) -> Response:
    session = signed_in(request)
    form = await read_form(request)
    assert session.token
    t = translator(request)
    reason = str(form.get("reason") or "").strip() or None
    try:
        await upstream(request).post("shelter", f"/v1/placements/{_uuid(placement_id)}/discharge", session.token,
                                     language=language(request), json={"reason": reason} if reason else {})
    except ApiError as error:
        return await _shelter_home(request, session, error=api_message(t, error), details=api_details(error))
    return redirect("/")


async def _housing_home(request: Request, session: Session, **extra: Any) -> Response:
    assert session.token
    api = upstream(request)
    lang = language(request)
    applications = items_of(await api.get("shelter", "/v1/rent-bonus/applications", session.token, language=lang))
    year = datetime.now(TIMEZONE).year
    budget = None
    with contextlib.suppress(ApiError):
        budget = await api.get("shelter", f"/v1/rent-bonus/budgets/{session.municipality}/{year}", session.token,
                               language=lang)
    detailed = []
    for application in applications[:50]:
        with contextlib.suppress(ApiError):
            application = await api.get("shelter", f"/v1/rent-bonus/applications/{application['id']}",
                                        session.token, language=lang)
        detailed.append(application)
    due = [(a, p) for a in detailed for p in a.get("payments") or [] if p.get("status") == "due"]
    due.sort(key=lambda pair: str(pair[1].get("month")))
    return render(request, "housing.html", applications=detailed, due=due, budget=budget, year=year,
                  this_month=datetime.now(TIMEZONE).strftime("%Y-%m"), **extra)


@router.get("/rent-bonus", response_class=HTMLResponse)
async def rent_bonus_page(request: Request) -> Response:
    session = signed_in(request)
    if session.role not in ("coordinator", "housing_officer"):
        raise Forbidden
    return await _housing_home(request, session)


@router.post("/rent-bonus/payments/{payment_id}/pay")
async def pay(request: Request, payment_id: str) -> Response:
    session = signed_in(request)
    await read_form(request)
    assert session.token
    t = translator(request)
    try:
        await upstream(request).post("shelter", f"/v1/rent-bonus/payments/{_uuid(payment_id)}/pay", session.token,
                                     language=language(request))
    except ApiError as error:
        return await _housing_home(request, session, error=api_message(t, error), details=api_details(error))
    return await _housing_home(request, session, notice=t.gettext("The payment is recorded as paid."))


@router.post("/rent-bonus/applications/{application_id}/decision")
async def decide(request: Request, application_id: str) -> Response:
    session = signed_in(request)
    form = await read_form(request)
    assert session.token
    t = translator(request)
    approved = form.get("approved") == "true"
    body: dict[str, Any] = {"approved": approved, "reason": str(form.get("reason") or "").strip() or None}
    if approved:
        body.update({"monthly_amount": str(form.get("monthly_amount") or "").strip(),
                     "start_month": str(form.get("start_month") or "").strip(),
                     "months": _int(form.get("months"))})
    body = {k: v for k, v in body.items() if v not in (None, "")}
    try:
        await upstream(request).post("shelter", f"/v1/rent-bonus/applications/{_uuid(application_id)}/decision",
                                     session.token, language=language(request), json=body)
    except ApiError as error:
        return await _housing_home(request, session, error=api_message(t, error), details=api_details(error))
    return await _housing_home(request, session, notice=t.gettext("The decision is recorded."))


def _int(value: Any) -> int | None:
    text = str(value or "").strip()
    return int(text) if text.isdigit() and len(text) < 9 else None


# --- cases ----------------------------------------------------------------------------------------


@router.get("/cases", response_class=HTMLResponse)
async def cases_page(request: Request) -> Response:
    session = signed_in(request)
    if session.role != "coordinator":
        raise Forbidden
    return await _case_search(request, session, {})


@router.post("/cases", response_class=HTMLResponse)
async def cases_search(request: Request) -> Response:
    """A search by name is a POST: a survivor's name never goes into a URL (CONTRACT §11)."""
    session = signed_in(request)
    form = await read_form(request)
    if session.role != "coordinator":
        raise Forbidden
    criteria = {key: str(form.get(key) or "").strip()[:200] for key in ("q", "status", "risk_level", "cursor")}
    return await _case_search(request, session, criteria)


async def _case_search(request: Request, session: Session, criteria: dict[str, str]) -> Response:
    assert session.token
    t = translator(request)
    try:
        page = await upstream(request).get("intake", "/v1/cases", session.token, language=language(request),
                                           params={**criteria, "limit": 50})
    except ApiError as error:
        return render(request, "cases.html", status=error.status if error.status < 500 else 502, cases=[],
                      next_cursor=None, criteria=criteria, error=api_message(t, error), details=api_details(error))
    return render(request, "cases.html", cases=items_of(page), next_cursor=(page or {}).get("next_cursor"),
                  criteria=criteria)


@router.get("/cases/{case_id}", response_class=HTMLResponse)
async def case_page(request: Request, case_id: str) -> Response:
    return await _case_page(request, case_id)


async def _case_page(request: Request, case_id: str, **extra: Any) -> Response:
    session = signed_in(request)
    assert session.token
    api = upstream(request)
    lang = language(request)
    cid = _uuid(case_id)
    token = session.token

    async def part(service: str, path: str, params: dict[str, Any] | None = None) -> Any:
        try:
            return await api.get(service, path, token, language=lang, params=params)  # type: ignore[arg-type]
        except ApiError as error:
            return error

    case = await api.get("intake", f"/v1/cases/{cid}", token, language=lang)
    coordinator = session.role == "coordinator"
    referrals, plan, placements, audit, members, applications = await asyncio.gather(
        part("referral", "/v1/referrals", {"case_id": cid}),
        part("referral", f"/v1/cases/{cid}/plan") if coordinator else _none(),
        part("shelter", "/v1/placements", {"case_id": cid}) if coordinator else _none(),
        part("intake", "/v1/audit", {"case_id": cid, "limit": 200}) if coordinator else _none(),
        part("referral", "/v1/members") if coordinator else _none(),
        part("shelter", "/v1/rent-bonus/applications", {"case_id": cid}) if coordinator else _none(),
    )
    member_list = items_of(members) if not isinstance(members, ApiError | type(None)) else []
    return render(
        request, "case.html", case=case,
        referrals=_listing(referrals), plan=plan if isinstance(plan, dict) else None,
        placements=_listing(placements), audit=_listing(audit)[-50:], members=member_list,
        applications=[a for a in _listing(applications) if a.get("case_id") == cid],
        member_names={str(m.get("id")): m.get("name") for m in member_list},
        urgencies=URGENCIES, form_key=new_key(), **extra,
    )


async def _none() -> None:
    return None


def _listing(value: Any) -> list[dict[str, Any]]:
    if value is None or isinstance(value, ApiError):
        return []
    return items_of(value)


@router.post("/cases/{case_id}/referrals")
async def manual_referral(request: Request, case_id: str) -> Response:
    session = signed_in(request)
    form = await read_form(request)
    assert session.token
    t = translator(request)
    cid = _uuid(case_id)
    body: dict[str, Any] = {
        "case_id": cid,
        "to_member_id": str(form.get("to_member_id") or ""),
        "urgency": str(form.get("urgency") or "normal"),
        "service": str(form.get("service") or "").strip() or None,
        "note": str(form.get("note") or "").strip() or None,
        "consent_override_reason": str(form.get("consent_override_reason") or "").strip() or None,
    }
    try:
        await upstream(request).post("referral", "/v1/referrals", session.token, language=language(request),
                                     json={k: v for k, v in body.items() if v is not None})
    except ApiError as error:
        return await _case_page(request, case_id, referral_error=api_message(t, error),
                               referral_details=api_details(error))
    return redirect(f"/cases/{cid}")


# --- reporting a case (CONTRACT §5) -----------------------------------------------------------------------


async def _risk_questions(request: Request, token: str) -> list[dict[str, Any]]:
    try:
        screen = await upstream(request).get("intake", "/v1/risk-screen", token, language=language(request))
        return [q for q in (screen or {}).get("questions", []) if isinstance(q, dict)]
    except ApiError:
        from services.intake.domain import DEFAULT_QUESTIONS

        return [{"id": qid, "red_flag": red} for qid, red in DEFAULT_QUESTIONS]


def _report_context(request: Request, session: Session) -> dict[str, Any]:
    now = datetime.now(TIMEZONE).strftime("%Y-%m-%dT%H:%M")
    return {
        "sources": SOURCES, "sexes": SEXES, "ethnicities": ETHNICITIES, "violence": VIOLENCE,
        "relationships": RELATIONSHIPS, "needs": NEEDS, "kinds": KINDS, "child_rows": range(CHILD_ROWS),
        "now": now, "default_source": session.role if session.role in SOURCES else "other",
    }


@router.get("/report", response_class=HTMLResponse)
async def report_form(request: Request) -> Response:
    session = signed_in(request)
    if session.role not in (*INSTITUTION_ROLES, "coordinator"):
        raise Forbidden
    assert session.token
    questions = await _risk_questions(request, session.token)
    return render(request, "report.html", questions=questions, form=None, form_key=new_key(),
                  **_report_context(request, session))


def _instant(value: str) -> str | None:
    """A `datetime-local` value, read in Europe/Tirane, as RFC 3339 with its offset."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value  # the service refuses it with a clear message
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=TIMEZONE)
    return moment.isoformat()


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
            "occurred_at": _instant(text("occurred_at") or ""),
            "violence_types": form.getlist("violence_types"),
            "perpetrator_relationship": text("perpetrator_relationship"),
            "description": text("description"),
        }.items() if v is not None},
        "needs": form.getlist("needs"),
        "risk_answers": {str(q["id"]): form.get(f"risk_{q['id']}") == "yes" for q in questions},
    }
    share_with = form.getlist("share_with")
    if share_with:
        body["consent"] = {"share_with": share_with, "given_at": _instant(text("consent_given_at") or "")}
    if coordinator and text("reported_at"):
        body["reported_at"] = _instant(text("reported_at") or "")
    return body


@router.post("/report")
async def report_submit(request: Request) -> Response:
    session = signed_in(request)
    form = await read_form(request)
    if session.role not in (*INSTITUTION_ROLES, "coordinator"):
        raise Forbidden
    assert session.token and session.municipality
    t = translator(request)
    questions = await _risk_questions(request, session.token)
    body = report_body(form, session.municipality, questions, session.role == "coordinator")
    key = str(form.get("form_key") or "")[:64] or new_key()
    try:
        created = await upstream(request).post("intake", "/v1/cases", session.token, language=language(request),
                                               json=body, headers={"Idempotency-Key": key})
    except ApiError as error:
        return render(request, "report.html", status=error.status if error.status < 500 else 502,
                      questions=questions, form=form, form_key=new_key(), error=api_message(t, error),
                      details=api_details(error), **_report_context(request, session))
    return redirect(f"/cases/{created['id']}")


# --- inbox and live alerts -----------------------------------------------------------------------------


@router.get("/inbox", response_class=HTMLResponse)
async def inbox_page(request: Request) -> Response:
    session = signed_in(request)
    assert session.token
    alerts = items_of(await upstream(request).get("notifications", "/v1/inbox", session.token,
                                                  language=language(request)))
    return render(request, "inbox.html", alerts=alerts)


@router.post("/inbox/{alert_id}/read")
async def inbox_read(request: Request, alert_id: str) -> Response:
    session = signed_in(request)
    await read_form(request)
    assert session.token
    with contextlib.suppress(ApiError):
        await upstream(request).post("notifications", f"/v1/inbox/{_uuid(alert_id)}/read", session.token,
                                     language=language(request))
    return redirect("/inbox")


@router.get("/events")
async def live_events(request: Request) -> Response:
    """The person's alerts as Server-Sent Events, relayed from the notifications service with their token."""
    session = signed_in(request)
    assert session.token
    token = session.token
    lang = language(request)
    last = request.headers.get("last-event-id", "")
    headers = {"Last-Event-ID": last} if last.isdigit() and len(last) < 20 else {}
    api = upstream(request)

    async def relay() -> AsyncIterator[bytes]:
        try:
            async with api.stream("notifications", "/v1/inbox/stream", token, language=lang,
                                  headers=headers) as response:
                if response.status_code != 200:
                    # Tell the page to stop retrying too fast; it retries after `retry`.
                    yield b"retry: 30000\nevent: unavailable\ndata: {}\n\n"
                    return
                yield b"retry: 3000\nevent: ready\ndata: {}\n\n"
                async for chunk in response.aiter_raw():
                    yield chunk
        except httpx.HTTPError:
            yield b"retry: 10000\n\n"

    return StreamingResponse(relay(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# --- reports, meetings, directory ------------------------------------------------------------------------


def _period(form: Any) -> tuple[str, str]:
    today = datetime.now(TIMEZONE).date()
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
async def reports_page(request: Request) -> Response:
    session = signed_in(request)
    if session.role not in ("coordinator", "auditor"):
        raise Forbidden
    assert session.token
    t = translator(request)
    start, end = _period(request.query_params)
    params = {"from": start, "to": end}
    if session.municipality == "*":
        params["municipality"] = str(request.query_params.get("municipality") or "*")[:64]
    try:
        summary = await upstream(request).get("referral", "/v1/reports/summary", session.token,
                                              language=language(request), params=params)
    except ApiError as error:
        return render(request, "reports.html", status=error.status if error.status < 500 else 502, summary=None,
                      charts=[], start=start, end=end, error=api_message(t, error), details=api_details(error))
    months = await _cases_by_month(request, session.token, start, end, params.get("municipality"))
    return render(request, "reports.html", summary=summary, charts=charts.summary_charts(summary, t, months),
                  start=start, end=end)


async def _cases_by_month(
    request: Request, token: str, start: str, end: str, municipality: str | None
) -> list[tuple[str, int | None]]:
    """Cases per month of the period (at most its last 12 months), one summary call per month."""
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    spans: list[tuple[str, date, date]] = []
    cursor = date(last.year, last.month, 1)
    while cursor >= date(first.year, first.month, 1) and len(spans) < 12:
        following = date(cursor.year + cursor.month // 12, cursor.month % 12 + 1, 1)
        spans.append((cursor.strftime("%Y-%m"), max(cursor, first), min(following - timedelta(days=1), last)))
        cursor = date(cursor.year - (cursor.month == 1), (cursor.month - 2) % 12 + 1, 1)
    api = upstream(request)
    lang = language(request)

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
async def reports_csv(request: Request) -> Response:
    session = signed_in(request)
    if session.role not in ("coordinator", "auditor"):
        raise Forbidden
    assert session.token
    start, end = _period(request.query_params)
    params = {"from": start, "to": end}
    if session.municipality == "*":
        params["municipality"] = str(request.query_params.get("municipality") or "*")[:64]
    answer = await upstream(request).call("referral", "GET", "/v1/reports/cases.csv", session.token,
                                          language=language(request), params=params)
    return Response(
        answer.data if isinstance(answer.data, str) else "", media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="cases-{start}-{end}.csv"',
                 "Cache-Control": "no-store"},
    )


@router.get("/meetings", response_class=HTMLResponse)
async def meetings_page(request: Request) -> Response:
    return await _meetings_page(request)


async def _meetings_page(request: Request, **extra: Any) -> Response:
    session = signed_in(request)
    if session.role != "coordinator":
        raise Forbidden
    assert session.token
    today = datetime.now(UTC).date()
    api = upstream(request)
    lang = language(request)
    meetings = items_of(await api.get("referral", "/v1/etn-meetings", session.token, language=lang,
                                      params={"from": (today - timedelta(days=90)).isoformat(),
                                              "to": (today + timedelta(days=180)).isoformat()}))
    members = items_of(await api.get("referral", "/v1/members", session.token, language=lang))
    cases = items_of(await api.get("intake", "/v1/cases", session.token, language=lang,
                                   params={"status": "open", "limit": 100}))
    return render(request, "meetings.html", meetings=meetings, members=members, cases=cases,
                  case_numbers={str(c.get("id")): c.get("case_number") for c in cases},
                  member_names={str(m.get("id")): m.get("name") for m in members},
                  now=datetime.now(TIMEZONE).strftime("%Y-%m-%dT%H:%M"), **extra)


@router.post("/meetings")
async def schedule_meeting(request: Request) -> Response:
    session = signed_in(request)
    form = await read_form(request)
    if session.role != "coordinator":
        raise Forbidden
    assert session.token
    t = translator(request)
    case_numbers = [c.strip() for c in str(form.get("case_ids") or "").replace(",", " ").split() if c.strip()]
    body = {
        "municipality": session.municipality,
        "kind": str(form.get("kind") or "etn"),
        "scheduled_for": _instant(str(form.get("scheduled_for") or "")),
        "case_ids": case_numbers,
        "member_ids": form.getlist("member_ids"),
    }
    try:
        await upstream(request).post("referral", "/v1/etn-meetings", session.token, language=language(request),
                                     json=body)
    except ApiError as error:
        return await _meetings_page(request, error=api_message(t, error), details=api_details(error))
    return redirect("/meetings")


@router.post("/meetings/{meeting_id}/minutes")
async def meeting_minutes(request: Request, meeting_id: str) -> Response:
    session = signed_in(request)
    form = await read_form(request)
    if session.role != "coordinator":
        raise Forbidden
    assert session.token
    t = translator(request)
    decision = {
        "case_id": str(form.get("case_id") or ""),
        "action": str(form.get("action") or "").strip(),
        "responsible_member_id": str(form.get("responsible_member_id") or ""),
        "due_date": str(form.get("due_date") or ""),
    }
    body = {"attended_member_ids": form.getlist("attended_member_ids"),
            "decisions": [decision] if decision["action"] else []}
    try:
        await upstream(request).post("referral", f"/v1/etn-meetings/{_uuid(meeting_id)}/minutes", session.token,
                                     language=language(request), json=body)
    except ApiError as error:
        return await _meetings_page(request, error=api_message(t, error), details=api_details(error))
    return redirect("/meetings")


@router.get("/directory", response_class=HTMLResponse)
async def directory_page(request: Request) -> Response:
    session = signed_in(request)
    assert session.token
    api = upstream(request)
    lang = language(request)
    members = items_of(await api.get("referral", "/v1/members", session.token, language=lang))
    shelters: list[dict[str, Any]] = []
    with contextlib.suppress(ApiError):
        shelters = items_of(await api.get("shelter", "/v1/shelters", session.token, language=lang))
    rules = None
    if session.role in ("coordinator", "admin"):
        with contextlib.suppress(ApiError):
            rules = await api.get("referral", "/v1/routing-rules", session.token, language=lang)
    return render(request, "directory.html", members=members, shelters=shelters, rules=rules)
