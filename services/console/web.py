"""Rendering, the session, CSRF and errors: what every page of the console shares."""

from __future__ import annotations

import hmac
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData

from services.console.i18n import HTML_LANGS, LANG_NAMES, Translator, choose_language
from services.console.session import COOKIE, LANG_COOKIE, Session, SessionCodec
from services.console.upstream import ApiError, Upstream
from shared.settings import Settings

TEMPLATES = Path(__file__).parent / "templates"
INSTITUTION_ROLES = (
    "police", "social_services", "child_protection", "health", "education", "employment", "legal_aid", "ngo",
)
ROLES = ("coordinator", *INSTITUTION_ROLES, "shelter_staff", "housing_officer", "auditor", "admin")

environment = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True
)


class SignInRequired(Exception):
    """No session (or it expired): the person is sent to /login."""


class Forbidden(Exception):
    """A form without its CSRF token, or a page the role has no use for."""


def settings_of(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def upstream(request: Request) -> Upstream:
    return request.app.state.upstream  # type: ignore[no-any-return]


def codec(request: Request) -> SessionCodec:
    return request.app.state.codec  # type: ignore[no-any-return]


def language(request: Request) -> str:
    return choose_language(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))


def translator(request: Request) -> Translator:
    return Translator(language(request))


def current_session(request: Request) -> Session | None:
    cached = getattr(request.state, "session", None)
    if cached is None:
        cached = codec(request).decode_session(request.cookies.get(COOKIE))
        request.state.session = cached
    return cached  # type: ignore[no-any-return]


def case_href_prefix(session: Session | None) -> str:
    """Where an alert about a case leads, by role: a page the person can open (CONTRACT §2). Shelter staff
    never read intake records: their view of the case (referrals to them, placements there); the housing
    office: the case's rent-bonus records; the auditor and the admin read no case at all."""
    role = session.role if session is not None else None
    if role == "shelter_staff":
        return "/shelter/cases/"
    if role == "housing_officer":
        return "/rent-bonus/cases/"
    if role in ("auditor", "admin", None):
        return ""
    return "/cases/"


def nav_for(session: Session | None) -> list[tuple[str, str]]:
    if session is None or not session.signed_in:
        return []
    role = session.role
    items: list[tuple[str, str]] = [("/", "Home")]
    if role == "coordinator":
        items += [("/cases", "Cases"), ("/transfers", "Transfers"), ("/meetings", "Meetings"),
                  ("/directory", "Directory"), ("/routing-rules", "Routing rules"), ("/reports", "Reports"),
                  ("/rent-bonus", "Rent bonus")]
    elif role in INSTITUTION_ROLES:
        items += [("/report", "Report a case"), ("/plan-actions", "Plan actions")]
    elif role == "housing_officer":
        items += [("/rent-bonus/budgets", "Budgets")]
    elif role == "auditor":
        items += [("/reports", "Reports")]
    items.append(("/inbox", "Inbox"))
    return items


async def read_form(request: Request) -> FormData:
    """The posted form, after its CSRF token matched the session's (403 otherwise)."""
    form = await request.form(max_files=0, max_fields=400, max_part_size=64 * 1024)
    session = current_session(request)
    sent = form.get("csrf")
    if session is None or not isinstance(sent, str) or not hmac.compare_digest(sent, session.csrf):
        raise Forbidden
    return form


def render(
    request: Request,
    template: str,
    *,
    status: int = 200,
    session: Session | None = None,
    new_session: Session | None = None,
    **context: Any,
) -> HTMLResponse:
    t = translator(request)
    session = new_session or session or current_session(request)
    if session is None:
        session = Session()
        new_session = session
    html = environment.get_template(template).render(
        _=t.gettext,
        t=t,
        lang=t.language,
        languages=LANG_NAMES,
        html_langs=HTML_LANGS,
        session=session,
        csrf=session.csrf,
        nav=nav_for(session),
        case_href=case_href_prefix(session if session.signed_in else None),
        path=request.url.path,
        **context,
    )
    response = HTMLResponse(html, status_code=status)
    if new_session is not None:
        set_session_cookie(request, response, new_session)
    return response


def set_session_cookie(request: Request, response: Response, session: Session) -> None:
    response.set_cookie(
        COOKIE,
        codec(request).encode_session(session),
        max_age=max(1, session.exp - int(time.time())),
        path="/",
        httponly=True,
        samesite="strict",
        secure=settings_of(request).environment != "development",
    )


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def api_message(t: Translator, error: ApiError) -> str:
    """A refusal of the API in words for the person: the service's own detail where it has one."""
    generic = {
        400: "The request was not accepted.",
        401: "Your session has ended. Please sign in again.",
        403: "You are not allowed to do this.",
        404: "Not found, or not visible to you.",
        409: "This conflicts with the current state; nothing was changed.",
        412: "Someone else changed this meanwhile; nothing was overwritten.",
        413: "Too much data was sent.",
        422: "Some values are not valid; please check them.",
        428: "The page was out of date; please reload it.",
        429: "Too many requests; please wait a moment.",
        503: "A service of the system cannot be reached right now; please try again shortly.",
    }
    text = t.gettext(generic.get(error.status, "The system could not complete the request."))
    return text


def api_details(error: ApiError) -> list[str]:
    """The service's field errors, as `field: message` lines (its messages carry no input values)."""
    lines = []
    if error.detail and error.status not in (401, 503):
        lines.append(error.detail)
    for item in error.errors[:20]:
        loc = item.get("loc") or []
        where = ".".join(str(part) for part in loc if part not in ("body",)) if isinstance(loc, list) else ""
        msg = str(item.get("msg") or "")
        lines.append(f"{where}: {msg}" if where else msg)
    return lines


def new_key() -> str:
    return uuid.uuid4().hex
