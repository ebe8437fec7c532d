"""The one registry of the services: adding a service is one entry in `REGISTRY`.

Everything that lists the services reads it: `mkr migrate`, `mkr serve`, `mkr run` (the launcher),
the permission renderer, the import/export defaults, the tests. `shared/` knows no service by name;
each service declares its own consumers (`CONSUMED_TOPICS` in its `events.py`) and a test checks they
agree with the entries here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.db import database_name
from shared.events import INTAKE_TOPIC as INTAKE
from shared.events import NOTIFICATIONS_TOPIC as NOTIFICATIONS
from shared.events import REFERRAL_TOPIC as REFERRAL
from shared.events import SHELTER_TOPIC as SHELTER
from shared.settings import Settings


@dataclass(frozen=True)
class ServiceSpec:
    """One process `mkr serve` can run."""

    name: str
    package: str  # the Python package; its `main.create_app(settings)` builds the app
    default_port: int  # MKR_<NAME>_PORT overrides it
    topic: str | None = None  # the contract topic it publishes on (None: publishes nothing)
    consumes: tuple[str, ...] = ()  # the contract topics its consumers read
    database: bool = True  # it owns a database, `<MKR_DATABASE_PREFIX><name>`, and migrations

    def database_name(self, settings: Settings) -> str | None:
        """Its database on the PostgreSQL server (shared.db.database_name), or None."""
        return database_name(settings, self.name) if self.database else None

    def create_app(self, settings: Settings, **options: Any) -> Any:
        module = importlib.import_module(f"{self.package}.main")
        return module.create_app(settings, **options)


REGISTRY: tuple[ServiceSpec, ...] = (
    ServiceSpec("intake", "services.intake", 8001, INTAKE, consumes=(REFERRAL,)),
    ServiceSpec("referral", "services.referral", 8002, REFERRAL, consumes=(INTAKE, SHELTER)),
    ServiceSpec("shelter", "services.shelter", 8003, SHELTER, consumes=(INTAKE, REFERRAL)),
    ServiceSpec(
        "notifications", "services.notifications", 8004, NOTIFICATIONS,
        consumes=(INTAKE, REFERRAL, SHELTER, NOTIFICATIONS),
    ),
    # The web console: no database, no topic; it calls the four services over HTTP.
    ServiceSpec("console", "services.console", 8000, database=False),
)

BY_NAME: Mapping[str, ServiceSpec] = {spec.name: spec for spec in REGISTRY}
# The services with a database, topic and migrations, and every process `mkr serve` can run.
SERVICES: tuple[str, ...] = tuple(spec.name for spec in REGISTRY if spec.database)
APPS: tuple[str, ...] = tuple(spec.name for spec in REGISTRY)
TOPICS: tuple[str, ...] = tuple(spec.topic for spec in REGISTRY if spec.topic)


def spec(name: str) -> ServiceSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown service {name!r}; one of: {', '.join(APPS)}") from None


def port_of(settings: Settings, name: str) -> int:
    """The port a process listens on: MKR_<NAME>_PORT, else its registry default."""
    return settings.port_of(name, spec(name).default_port)


def local_url(settings: Settings, name: str) -> str:
    return f"http://127.0.0.1:{port_of(settings, name)}"


def console_upstreams(settings: Settings) -> dict[str, str]:
    """Where the console calls each service: MKR_CONSOLE_<NAME>_URL, else the local port."""
    return {name: settings.console_urls.get(name) or local_url(settings, name) for name in SERVICES}


def app_factory(name: str, settings: Settings) -> Callable[[], Any]:
    """What `mkr serve` hands uvicorn: builds the app with the settings (and, for the console, its upstreams)."""
    entry = spec(name)
    if entry.name == "console":
        return lambda: entry.create_app(settings, upstreams=console_upstreams(settings))
    return lambda: entry.create_app(settings)
