"""PostgreSQL LISTEN on one connection, reconnected for as long as the process runs.

Every service that LISTENs (the outbox relay on `mkr_outbox`; notifications on `mkr_alerts` and
`mkr_deliveries`) uses `Listener`: it connects, registers a callback per channel, calls `on_connect`
(a NOTIFY sent while nobody listened is lost, so whatever was waiting is caught up there), and when the
connection drops it reconnects with a jittered back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping

log = logging.getLogger("mkr.listener")

Callback = Callable[[str], None]  # the NOTIFY's payload ('' when none)


def backoff(attempt: int, base: float = 0.5, cap: float = 10.0) -> float:
    """Seconds before reconnect attempt `attempt` (1, 2, ...): doubling up to `cap`, with jitter."""
    return min(cap, base * 2 ** min(attempt, 10)) * (0.5 + random.random() / 2)


class Listener:
    """LISTEN on `channels` until `stopping` is set; `connected` is set while a connection listens."""

    CHECK_SECONDS = 5.0  # how often a quiet connection is checked for being closed

    def __init__(
        self,
        name: str,
        dsn: Mapping[str, object],
        channels: Mapping[str, Callback],
        stopping: asyncio.Event,
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.dsn = dict(dsn)
        self.channels = dict(channels)
        self.stopping = stopping
        self.on_connect = on_connect
        self.connected = asyncio.Event()

    async def run(self) -> None:
        attempt = 0
        while not self.stopping.is_set():
            try:
                await self._listen_once()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                log.warning("listener failed, will reconnect",
                            extra={"listener": self.name, "error_class": type(exc).__name__, "attempt": attempt})
                await self._pause(backoff(attempt))

    async def _listen_once(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(
            **self.dsn,  # type: ignore[arg-type]
            timeout=10,
            server_settings={"application_name": f"mkr-{self.name}"[:63]},  # pg_stat_activity names who listens
        )
        try:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda *_: lost.set())
            for channel, callback in self.channels.items():
                await conn.add_listener(channel, _adapter(callback))
            self.connected.set()
            if self.on_connect is not None:
                self.on_connect()
            while not self.stopping.is_set() and not conn.is_closed() and not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), timeout=self.CHECK_SECONDS)
        finally:
            self.connected.clear()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=5)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)


def _adapter(callback: Callback) -> Callable[..., None]:
    # asyncpg calls (connection, pid, channel, payload).
    def on_notify(*args: object) -> None:
        callback(str(args[-1] or ""))

    return on_notify
