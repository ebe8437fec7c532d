"""Leader election among a service's workers and replicas: a session-level PostgreSQL advisory lock.

Each process keeps one dedicated connection to its service's database and tries
`pg_try_advisory_lock(LOCK_CLASS, <per-service key>)` on it. The holder is the leader: it runs what must
run once (the outbox relay, the consumers, the schedulers, the census, pruning and retention). The others
try again every `MKR_LEADER_RETRY_SECONDS`. The server releases the lock when the holder's connection
drops (its process died, was killed, or lost the network), and a follower takes over at its next try.

The leader checks its connection as often; if it is lost, it stops its jobs (another may hold the lock by
then) and becomes a follower. Between the loss and that check two processes may run the jobs at once for
a moment; every job is safe under that (`claim_due` SKIP LOCKED, the relay's per-batch lock, the inbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import zlib
from collections.abc import Awaitable, Callable

import asyncpg

log = logging.getLogger("mkr.leader")

# The first key of the two-key advisory lock (pg_locks.classid); the second (objid) names the service.
LOCK_CLASS = 7310003


def lock_key(service: str) -> int:
    """The service's second key: stable across processes and releases (crc32, not Python's hash)."""
    return zlib.crc32(f"mkr.leader.{service}".encode()) & 0x7FFFFFFF


def application_name(service: str, pid: int | None = None) -> str:
    """The election connection's name in pg_stat_activity: names the worker's process id."""
    return f"mkr-{service}-election:{os.getpid() if pid is None else pid}"


class Leadership:
    """One process's part in the election; `on_gain` / `on_loss` start and stop the leader's jobs."""

    def __init__(
        self,
        service: str,
        dsn: dict[str, object],
        *,
        retry_seconds: float,
        on_gain: Callable[[], Awaitable[None]],
        on_loss: Callable[[], Awaitable[None]],
        stopping: asyncio.Event,
    ) -> None:
        self.service = service
        self.dsn = dsn
        self.retry_seconds = retry_seconds
        self.on_gain = on_gain
        self.on_loss = on_loss
        self.stopping = stopping
        self.key = lock_key(service)
        self.is_leader = False
        self.terms = 0  # times this process took the lead
        self.losses = 0  # times it lost its lock connection while leading, and stopped its jobs
        self._conn: asyncpg.Connection | None = None

    @property
    def role(self) -> str:
        return "leader" if self.is_leader else "follower"

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                **self.dsn,  # type: ignore[arg-type]
                timeout=10,
                server_settings={"application_name": application_name(self.service)},
            )
        return self._conn

    async def try_acquire(self) -> bool:
        """One attempt; on success the leader's jobs are started (`on_gain`) before it returns."""
        try:
            conn = await self._connection()
            got = bool(await asyncio.wait_for(
                conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", LOCK_CLASS, self.key), self.retry_seconds * 5
            ))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("leader election: no connection", extra={"error_class": type(exc).__name__})
            await self._drop()
            return False
        if got:
            self.is_leader = True
            self.terms += 1
            log.info("leader election: this worker leads", extra={"service": self.service})
            await self.on_gain()
        return got

    async def _still_held(self) -> bool:
        """The lock lives as long as the connection that took it: never reconnect here (a new session
        holds nothing)."""
        conn = self._conn
        if conn is None or conn.is_closed():
            await self._drop()
            return False
        try:
            await asyncio.wait_for(conn.fetchval("SELECT 1"), self.retry_seconds * 5)
            return True
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            await self._drop()
            return False

    async def run(self) -> None:
        """Until `stopping`: followers try to lead, the leader checks it still holds the lock."""
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=self.retry_seconds)
            if self.stopping.is_set():
                return
            if not self.is_leader:
                await self.try_acquire()
            elif not await self._still_held():
                log.warning("leader election: lost the lock connection; stepping down")
                self.is_leader = False
                await self.on_loss()
                self.losses += 1  # counted once its jobs have stopped

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.terminate()

    async def release(self) -> None:
        """At shutdown, after the jobs stopped: closing the connection frees the lock for a follower."""
        self.is_leader = False
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), timeout=5)
            except Exception:
                conn.terminate()
