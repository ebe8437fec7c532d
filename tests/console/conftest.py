"""The console against the real stack: the four services and the console on loopback ports (uvicorn in this
process), a small OpenID Connect provider, and one Chromium (Debian's) for the whole session."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from mkr.registry import SERVICES
from services.console.main import create_app as create_console
from shared.embedded import free_port
from shared.settings import Settings
from tests.console.oidc_provider import CLIENT_ID, CLIENT_SECRET, ProviderState, create_provider
from tests.support import Stack

CHROMIUM = os.environ.get("MKR_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "console"


class Served:
    """One ASGI app served by uvicorn on a loopback port, in the test session's event loop."""

    def __init__(self, app: FastAPI, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, lifespan="off", log_config=None,
                                access_log=False, timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve())
        for _ in range(200):
            if self.server.started:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("server did not start")

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            try:
                await asyncio.wait_for(self.task, timeout=10)
            except (TimeoutError, asyncio.CancelledError):
                self.task.cancel()


@dataclass
class Live:
    """The running system as a browser sees it."""

    stack: Stack
    settings: Settings  # the console's
    console: FastAPI
    url: str
    service_urls: dict[str, str]
    provider: ProviderState

    def auth(self, role: str, municipality: str, **claims: Any) -> dict[str, str]:
        return self.stack.auth(role, municipality, **claims)


@pytest.fixture(scope="session")
async def live(stack: Stack) -> AsyncIterator[Live]:
    served: list[Served] = []
    try:
        urls: dict[str, str] = {}
        for name in SERVICES:
            server = Served(stack.apps[name])
            await server.start()
            served.append(server)
            urls[name] = server.url
        provider_state = ProviderState()
        provider = Served(create_provider(stack.settings, provider_state))
        provider_state.issuer = provider.url
        await provider.start()
        served.append(provider)
        console_port = free_port()
        settings = stack.settings.model_copy(update={
            "environment": "development",
            "ports": {**stack.settings.ports, "console": console_port},
            "console_urls": dict(urls),
            "console_oidc_issuer": provider.url,
            "console_oidc_client_id": CLIENT_ID,
            "console_oidc_client_secret": CLIENT_SECRET,
        })
        console = create_console(settings)
        console_server = Served(console, console_port)
        async with console.router.lifespan_context(console):
            await console_server.start()
            served.append(console_server)
            yield Live(stack=stack, settings=settings, console=console, url=console_server.url,
                       service_urls=urls, provider=provider_state)
    finally:
        for server in reversed(served):
            await server.stop()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests put their photographs: docs/console/ only when asked (`make screenshots` sets
    MKR_SCREENSHOTS=1), else a temporary folder, so a test run leaves the work tree as it was (the
    photographs are still taken either way)."""
    if os.environ.get("MKR_SCREENSHOTS", "").lower() in {"1", "true", "yes"}:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium, one for the session. Missing, the tests fail (never skip): `make test` installs it."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it (apt-get install -y chromium; `make test` does)")
    from playwright.async_api import async_playwright

    playwright = await async_playwright().start()
    chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    try:
        yield chromium
    finally:
        await chromium.close()
        await playwright.stop()


@pytest.fixture
async def page_factory(browser: Any, live: Live) -> AsyncIterator[Any]:
    """New browser contexts (own cookies), closed after the test; `locale` sets Accept-Language."""
    contexts: list[Any] = []

    async def make(locale: str = "sq-AL", viewport: dict[str, int] | None = None) -> Any:
        context = await browser.new_context(locale=locale, viewport=viewport or {"width": 1280, "height": 900},
                                            base_url=live.url)
        # Every wait is for an element or a navigation and ends when it is there; Playwright's 30 s default
        # limit is short for a page with axe on two cores shared with other suites.
        context.set_default_timeout(60_000)
        # Nothing may be loaded from another host: any such request fails the test.
        foreign: list[str] = []
        context.foreign = foreign

        async def guard(route: Any) -> None:
            url = route.request.url
            if url.startswith(live.url) or url.startswith(live.provider.issuer) or url.startswith("data:"):
                await route.continue_()
            else:
                foreign.append(url)
                await route.abort()

        await context.route("**/*", guard)
        contexts.append(context)
        page = await context.new_page()
        return page

    yield make
    for context in contexts:
        assert not context.foreign, f"requests to other hosts: {context.foreign}"
        await context.close()


@pytest.fixture
async def http(live: Live) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=30, follow_redirects=False) as client:
        yield client
