"""The four services' public API, called with the signed-in person's own token."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import httpx

from shared.settings import Settings

# The services the console calls. Their base URLs: MKR_CONSOLE_<NAME>_URL, else what `mkr serve` passes
# in from the service registry (mkr/registry.py: 127.0.0.1 and the service's port).
ServiceName = Literal["intake", "referral", "shelter", "notifications"]
UPSTREAMS: tuple[ServiceName, ...] = get_args(ServiceName)

log = logging.getLogger("mkr.console.upstream")


@dataclass
class ApiError(Exception):
    """A service's refusal (its problem+json), or the service being unreachable (status 503)."""

    status: int
    title: str = ""
    detail: str = ""
    errors: list[dict[str, Any]] = field(default_factory=list)
    service: str = ""
    body: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.service} answered {self.status}"


@dataclass
class ApiAnswer:
    status: int
    data: Any
    headers: httpx.Headers


def items_of(data: Any) -> list[dict[str, Any]]:
    """A list answer: `{"items": [...]}` (CONTRACT §3) or the first release's bare array."""
    if isinstance(data, dict):
        items = data.get("items", [])
    else:
        items = data
    return [item for item in (items or []) if isinstance(item, dict)]


class Upstream:
    def __init__(
        self,
        settings: Settings,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
        base_urls: Mapping[str, str] | None = None,
    ):
        self.clients: dict[str, httpx.AsyncClient] = {}
        for name in UPSTREAMS:
            transport = (transports or {}).get(name)
            url = settings.console_urls.get(name) or (base_urls or {}).get(name)
            if not url:
                raise ValueError(f"the console needs MKR_CONSOLE_{name.upper()}_URL (or `mkr serve --service console`)")
            self.clients[name] = httpx.AsyncClient(
                base_url=url.rstrip("/"),
                timeout=httpx.Timeout(10.0, connect=3.0),
                transport=transport,
                follow_redirects=False,
            )

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    @staticmethod
    def _headers(token: str, language: str, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}", "Accept-Language": language, "Accept": "application/json"}
        headers.update(extra or {})
        return headers

    async def call(
        self,
        service: ServiceName,
        method: str,
        path: str,
        token: str,
        *,
        language: str = "sq",
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ApiAnswer:
        client = self.clients[service]
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        try:
            response = await client.request(
                method, path, json=json, params=clean, headers=self._headers(token, language, headers)
            )
        except httpx.HTTPError as exc:
            log.warning("service unreachable", extra={"error_class": type(exc).__name__})
            raise ApiError(503, service=service) from exc
        data: Any = None
        if response.content:
            ctype = response.headers.get("content-type", "")
            if "json" in ctype:
                try:
                    data = response.json()
                except ValueError:
                    data = None
            else:
                data = response.text
        if response.status_code >= 400:
            body = data if isinstance(data, dict) else {}
            errors = body.get("errors")
            raise ApiError(
                response.status_code,
                title=str(body.get("title") or ""),
                detail=str(body.get("detail") or ""),
                errors=errors if isinstance(errors, list) else [],
                service=service,
                body=body,
            )
        return ApiAnswer(response.status_code, data, response.headers)

    async def get(self, service: ServiceName, path: str, token: str, **kwargs: Any) -> Any:
        return (await self.call(service, "GET", path, token, **kwargs)).data

    async def post(self, service: ServiceName, path: str, token: str, **kwargs: Any) -> Any:
        return (await self.call(service, "POST", path, token, **kwargs)).data

    async def delete(self, service: ServiceName, path: str, token: str, **kwargs: Any) -> Any:
        return (await self.call(service, "DELETE", path, token, **kwargs)).data

    @asynccontextmanager
    async def stream(
        self, service: ServiceName, path: str, token: str, *, language: str, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[httpx.Response]:
        client = self.clients[service]
        request = client.build_request(
            "GET", path, headers=self._headers(token, language, {"Accept": "text/event-stream", **(headers or {})}),
            timeout=httpx.Timeout(10.0, read=None),
        )
        response = await client.send(request, stream=True)
        try:
            yield response
        finally:
            await response.aclose()

    async def ready(self) -> dict[str, bool]:
        checks: dict[str, bool] = {}
        for name, client in self.clients.items():
            try:
                checks[name] = (await client.get("/healthz", timeout=3)).status_code == 200
            except httpx.HTTPError:
                checks[name] = False
        return checks
