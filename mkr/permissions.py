"""The role × endpoint matrix, read from the routes themselves (each declares `allow(...)`).

The routes are the one place where permissions live; this module renders them (for the docs and the
generated permission tests), so documentation and tests cannot drift from the code.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, _iter_routes_with_context

from shared.auth import Role


@dataclass(frozen=True)
class Endpoint:
    service: str
    method: str
    path: str
    roles: frozenset[Role] | None  # None: no authentication (probes, docs)


def _allowed(dependant: Dependant) -> frozenset[Role] | None:
    for sub in dependant.dependencies:
        roles = getattr(sub.call, "allowed_roles", None)
        if roles is not None:
            return frozenset(roles)
        nested = _allowed(sub)
        if nested is not None:
            return nested
    return None


def endpoints(service: str, app: FastAPI) -> Iterator[Endpoint]:
    # FastAPI keeps included routers as branches; walk them to the routes as served.
    for route, context in _iter_routes_with_context(app.routes):
        if not isinstance(route, APIRoute):
            continue
        roles = _allowed(route.dependant)
        path = context.path if context is not None and context.path else route.path
        for method in sorted(route.methods or ()):
            yield Endpoint(service, method, path, roles)


def render_markdown(all_endpoints: list[Endpoint]) -> str:
    roles = list(Role)
    header = ["service", "endpoint", *[r.value for r in roles]]
    lines = [
        "# Permissions",
        "",
        "Generated from the routes by `python -m mkr.permissions` (a test keeps this file current).",
        "✓ = the role may call the endpoint (objects of another municipality still answer 404, and",
        "object-level rules of CONTRACT §2 apply); · = 403. Every `/v1` call without a valid token is 401.",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    for ep in sorted(all_endpoints, key=lambda e: (e.service, e.path, e.method)):
        if ep.roles is None:
            continue
        cells = ["✓" if r in ep.roles else "·" for r in roles]
        lines.append(f"| {ep.service} | `{ep.method} {ep.path}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def all_apps() -> dict[str, FastAPI]:
    """Every service of the registry with an API of its own (the console only calls theirs)."""
    from mkr.registry import SERVICES, spec
    from shared.settings import Settings

    settings = Settings()
    return {name: spec(name).create_app(settings) for name in SERVICES}


def matrix() -> list[Endpoint]:
    return [ep for name, app in all_apps().items() for ep in endpoints(name, app)]


if __name__ == "__main__":
    print(render_markdown(matrix()), end="")
