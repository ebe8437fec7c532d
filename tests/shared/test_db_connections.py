"""Connections: pinged at checkout only after sitting idle (shared/db.py ping_idle_connections), and driver
 statements in the session's transaction (db.DriverStatement).

Against the real server: a connection whose backend the server ended is replaced without an error when it
had been idle; one handed back moments ago is not pinged (no three round trips per transaction), meets the
dead backend once, and the pool recovers at the next checkout.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared import db
from shared.settings import Settings


async def _terminate(settings: Settings, pid: int) -> None:
    conn = await asyncpg.connect(**db.asyncpg_dsn(db.server_url(settings)))  # type: ignore[arg-type]
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
        for _ in range(100):  # the backend is gone once the server no longer lists it
            if not await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
                return
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


def _engine(settings: Settings, idle: float) -> AsyncEngine:
    engine = create_async_engine(db.server_url(settings), pool_size=1, max_overflow=0)
    db.ping_idle_connections(engine, idle=idle)
    return engine


async def _backend(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.text("SELECT pg_backend_pid()")))


async def test_an_idle_connection_whose_backend_died_is_replaced_at_checkout(settings: Settings) -> None:
    engine = _engine(settings, idle=0.2)
    try:
        first = await _backend(engine)
        await _terminate(settings, first)
        await asyncio.sleep(0.3)  # idle longer than the threshold: pinged, fails, reconnected
        assert await _backend(engine) != first
    finally:
        await engine.dispose()


async def test_a_connection_just_handed_back_is_not_pinged(settings: Settings) -> None:
    engine = _engine(settings, idle=60.0)
    try:
        first = await _backend(engine)
        await _terminate(settings, first)
        # No ping: the dead backend is met by the statement itself (an error, not a hang) ...
        with pytest.raises(sa.exc.DBAPIError) as raised:
            await _backend(engine)
        assert raised.value.connection_invalidated
        # ... and the pool, invalidated by that disconnect, reconnects for the next checkout.
        assert await _backend(engine) != first
    finally:
        await engine.dispose()


async def test_a_service_engine_replaces_a_connection_that_died_while_idle(settings: Settings) -> None:
    await db.ensure_database(settings, "intake")
    engine = db.create_engine(settings, "intake")  # the services' engine: no pool_pre_ping, the idle ping
    try:
        first = await _backend(engine)
        await _terminate(settings, first)
        await asyncio.sleep(db.IDLE_BEFORE_PING + 0.1)
        assert await _backend(engine) != first
    finally:
        await engine.dispose()


async def test_a_driver_statement_runs_in_the_sessions_transaction(settings: Settings) -> None:
    """db.DriverStatement (asyncpg itself, for the report's hottest statements): first in a transaction, it
    begins it, so a rollback takes its write back; after SQLAlchemy's statements it joins the same one."""
    engine = create_async_engine(db.server_url(settings), pool_size=1, max_overflow=0)
    sessions = db.session_factory(engine)
    insert = db.DriverStatement(sa.text("INSERT INTO driver_probe (n, label) VALUES (:n, :label) RETURNING n, label"))
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE IF NOT EXISTS driver_probe (n int PRIMARY KEY, label text)"))
            await conn.execute(sa.text("TRUNCATE driver_probe"))
        async with sessions() as session:
            async with session.begin():
                rows = await insert.fetch(session, {"n": 1, "label": "first", "unused": "ignored"})
                assert [(row.n, row.label) for row in rows] == [(1, "first")]
                with pytest.raises(AttributeError):
                    _ = rows[0].missing
                await session.rollback()
            async with session.begin():
                await session.execute(sa.text("INSERT INTO driver_probe VALUES (2, 'orm')"))
                await insert.fetch(session, {"n": 3, "label": "driver"})
                seen = await session.scalar(sa.text("SELECT count(*) FROM driver_probe"))
                assert seen == 2  # one transaction: each sees the other's row
        async with engine.connect() as conn:
            kept = (await conn.execute(sa.text("SELECT n FROM driver_probe ORDER BY n"))).scalars().all()
        assert kept == [2, 3]  # the rolled-back driver write is gone, the committed ones stay
    finally:
        async with engine.begin() as conn:
            await conn.execute(sa.text("DROP TABLE IF EXISTS driver_probe"))
        await engine.dispose()
