"""`/docs` and `/redoc` that work on a closed network: Swagger UI and ReDoc served from the package's own
files (fastapi-offline ships them), no CDN, no inline script (so a strict Content-Security-Policy holds)."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
_INIT = """window.addEventListener("load", function () {
  var el = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({url: el.dataset.openapi, dom_id: "#swagger-ui", deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    layout: "BaseLayout", showExtensions: true, persistAuthorization: false});
});
"""


def assets_path() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def install_offline_docs(app: FastAPI) -> None:
    """Serve `/docs` (Swagger UI) and `/redoc` from local assets; the app must be built with docs_url=None."""
    app.mount(ASSETS_URL, StaticFiles(directory=assets_path()), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        spec = json.dumps(f"{root}{openapi_url}")[1:-1].replace("&", "&amp;").replace('"', "&quot;")
        html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{app.title} - API</title>
<link rel="stylesheet" href="{root}{ASSETS_URL}/swagger-ui.css">
<link rel="icon" href="{root}{ASSETS_URL}/favicon.png"></head>
<body><div id="swagger-ui" data-openapi="{spec}"></div>
<script src="{root}{ASSETS_URL}/swagger-ui-bundle.js"></script>
<script src="{root}/docs-init.js"></script></body></html>"""
        return HTMLResponse(html)

    @app.get("/docs-init.js", include_in_schema=False)
    async def swagger_init() -> Response:
        return Response(_INIT, media_type="application/javascript")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}", title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js", redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
