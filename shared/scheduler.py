"""Once-only time-based events: claim due rows, mark them, publish, in one transaction; repeat."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    from shared.app import ServiceRuntime

BATCH = 200


async def claim_due(session: AsyncSession, stmt: Select[Any], *, limit: int = BATCH) -> list[Any]:
    """The due rows of `stmt`, locked for this transaction; rows another replica holds are skipped.

    The caller marks each row raised and publishes its event before committing, so across restarts
    and replicas every row is raised once.
    """
    result = await session.execute(stmt.limit(limit).with_for_update(skip_locked=True))
    return list(result.scalars().all())


def periodic(
    name: str, scan: Callable[[ServiceRuntime], Awaitable[int]], every: Callable[[], float]
) -> Callable[[ServiceRuntime], Awaitable[None]]:
    """A background job running `scan` every `every()` seconds (again at once while it finds work)."""

    async def job(runtime: ServiceRuntime) -> None:
        while not runtime.stopping.is_set():
            if await scan(runtime):
                continue  # more may be due (what it published wakes the relay: the outbox's NOTIFY trigger)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.stopping.wait(), timeout=every())

    job.__name__ = name
    return job
