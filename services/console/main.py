"""The console service: the app factory (CONTRACT §11)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.console import i18n, pages
from services.console.oidc import OidcClient
from services.console.session import SessionCodec, load_session_key
from services.console.upstream import ApiError, Upstream
from services.console.web import Forbidden, SignInRequired, api_details, api_message, redirect, render, translator
from shared.auth import TokenVerifier
from shared.docs import install_offline_docs
from shared.errors import install_error_handlers
from shared.keys import ensure_local_keypair
from shared.observability import RequestContextMiddleware, metrics_endpoint
from shared.settings import Settings, get_settings

log = logging.getLogger("mkr.console")
STATIC = Path(__file__).parent / "static"


class SecurityHeaders:
    """CSP without inline script, nothing from another host; no-store on every page (they show personal data)."""

    def __init__(self, app: ASGIApp, form_targets: str = "") -> None:
        self.app = app
        self.csp = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
            f"form-action 'self'{form_targets}"
        ).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"
                           or path.startswith("/static/")]
                headers += [
                    (b"content-security-policy", self.csp),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                if not path.startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, _send)


def _install_error_pages(app: FastAPI) -> None:
    """No sign-in: to /login; a refused form or page: a readable 403; the API's refusals as pages."""

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, _: SignInRequired) -> Response:
        return redirect("/login")

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, _: Forbidden) -> Response:
        t = translator(request)
        return render(request, "message.html", status=403, message=t.gettext("You are not allowed to do this."),
                      details=[], back="/")

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> Response:
        if error.status == 401:
            return redirect("/login")
        t = translator(request)
        status = error.status if 400 <= error.status < 500 else 502
        return render(request, "message.html", status=status, message=api_message(t, error),
                      details=api_details(error), back="/")


def create_app(
    settings: Settings | None = None,
    *,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    upstreams: Mapping[str, str] | None = None,
    oidc_transport: httpx.AsyncBaseTransport | None = None,
    local_token_ttl: int = 8 * 3600,
) -> FastAPI:
    settings = settings or get_settings()
    if settings.environment == "development" and not (settings.jwt_public_key or settings.jwt_jwks_url):
        ensure_local_keypair(settings)
    codec = SessionCodec(load_session_key(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await app.state.upstream.aclose()

    app = FastAPI(title="MKR console", version="1.0.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    i18n.use_profile(settings.country)
    app.state.codec = codec
    app.state.upstream = Upstream(settings, transports, upstreams)
    app.state.verifier = TokenVerifier(settings)
    app.state.local_token_ttl = local_token_ttl
    app.state.oidc = (
        OidcClient(settings, oidc_transport)
        if settings.console_oidc_issuer and settings.console_oidc_client_id else None
    )
    install_error_handlers(app)
    _install_console_errors(app)
    _install_probes(app)
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(pages.router)
    install_offline_docs(app)
    form_targets = ""
    if settings.console_oidc_issuer:
        parts = urlsplit(settings.console_oidc_issuer)
        form_targets = f" {parts.scheme}://{parts.netloc}"
    app.add_middleware(SecurityHeaders, form_targets=form_targets)
    app.add_middleware(RequestContextMiddleware, service="console")
    return app


def _install_console_errors(app: FastAPI) -> None:
    """The console answers pages, not problem+json: sign-in redirects, and a message page for refusals."""

    _install_error_pages(app)


def _install_probes(app: FastAPI) -> None:
    """/healthz (alive) and /readyz (each service it calls answers its /healthz)."""

    @app.get("/healthz", tags=["probes"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"])
    async def readyz() -> JSONResponse:
        checks = await app.state.upstream.ready()
        ok = all(checks.values())
        return JSONResponse({"status": "ready" if ok else "unready", "checks": checks}, status_code=200 if ok else 503)
