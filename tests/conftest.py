"""The test session's real PostgreSQL and broker: the environment's, or embedded ones started here."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from mkr.registry import SERVICES
from shared import db
from shared.embedded import ensure_postgres, free_port, start_broker, stop_postgres, stop_process
from shared.keys import ensure_local_keypair
from shared.settings import Settings
from tests.support import Stack, running_stack, throwaway_event_database


@pytest.fixture(scope="session")
def database_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("MKR_DATABASE_URL")
    if url:
        yield url
        return
    # Not under pytest's basetemp: concurrent pytest runs prune each other's old basetemps.
    state = Path(tempfile.mkdtemp(prefix="mkr-test-pg-"))
    try:
        yield ensure_postgres(state, cleanup_mode="delete")
    finally:
        stop_postgres(state)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    bootstrap = os.environ.get("MKR_KAFKA_BOOTSTRAP")
    if bootstrap:
        yield bootstrap
        return
    port = free_port()
    proc = start_broker(port, tmp_path_factory.mktemp("broker") / "tansu.log")
    yield f"127.0.0.1:{port}"
    stop_process(proc)


def make_settings(database_url: str, bootstrap: str, state_dir: Path, **overrides: object) -> Settings:
    """Settings for one isolated run: fresh databases and topics, a throwaway signing key."""
    run = uuid.uuid4().hex[:8]
    values: dict[str, object] = {
        "environment": "test",
        "state_dir": state_dir,
        "database_url": database_url,
        "database_prefix": f"mkrt_{run}_",
        "db_pool_size": 4,
        "db_max_overflow": 6,
        "kafka_bootstrap": bootstrap,
        "kafka_enable_idempotence": os.environ.get("MKR_KAFKA_ENABLE_IDEMPOTENCE", "false").lower() == "true",
        "kafka_topic_prefix": f"t{run}.",
        "kafka_request_timeout_ms": 3000,
        "jwt_issuer": "mkr-test",
        "jwt_audience": "mkr",
        "outbox_poll_seconds": 0.5,
    }
    values.update(overrides)
    settings = Settings(**values)  # type: ignore[arg-type]
    ensure_local_keypair(settings)
    return settings


async def drop_databases(settings: Settings) -> None:
    for service in SERVICES:
        await db.drop_database(settings, service)


@pytest.fixture(scope="session")
async def settings(
    database_server_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Settings]:
    settings = make_settings(database_server_url, kafka_bootstrap, tmp_path_factory.mktemp("state"))
    yield settings
    await drop_databases(settings)


@pytest.fixture(scope="session")
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    """All four services, started once for the session (tests use their own municipalities or ids)."""
    async with running_stack(settings) as running:
        yield running
    await asyncio.sleep(0)


@pytest.fixture
async def event_db(settings: Settings, request: pytest.FixtureRequest) -> AsyncIterator[AsyncEngine]:
    """A throwaway database with the event tables (`shared.events.event_metadata`), one per test, dropped
    after it (tests/shared: the relay, the consumer's inbox, the watchdog)."""
    prefix = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "")[:12]
    async with throwaway_event_database(settings, prefix) as engine:
        yield engine
