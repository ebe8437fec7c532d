"""Sign-in (OpenID Connect with PKCE; the development form), sign-out and the language switch."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from jose import jwt as jose_jwt

from services.console.deps import CsrfForm
from services.console.i18n import LANGUAGES
from services.console.oidc import OidcClient, OidcError
from services.console.session import LANG_COOKIE, OIDC_COOKIE, Session
from services.console.web import (
    ROLES,
    codec,
    current_session,
    read_form,
    redirect,
    render,
    set_session_cookie,
    settings_of,
    translator,
)
from shared.auth import MUNICIPALITY_RE, TokenVerifier
from shared.errors import Problem
from shared.keys import issue_token

router = APIRouter(include_in_schema=False)


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
async def logout(request: Request, _: CsrfForm) -> Response:
    response = redirect("/login")
    set_session_cookie(request, response, Session())
    return response


@router.post("/language")
async def switch_language(request: Request, form: CsrfForm) -> Response:
    chosen = str(form.get("lang") or "")
    back = str(form.get("back") or "/")
    if not back.startswith("/") or back.startswith("//"):
        back = "/"
    response = redirect(back)
    if chosen in LANGUAGES:
        response.set_cookie(LANG_COOKIE, chosen, max_age=365 * 86400, path="/", httponly=True, samesite="strict",
                            secure=settings_of(request).environment != "development")
    return response
