"""Pruning what grows forever (issue #17): published outbox rows, consumed-event ids, idempotency keys
and (notifications) finished deliveries — each past its own age, in small batches, counted per table.

A table is pruned only past the window in which its rows still matter: the outbox past the relay's
replay window (`outbox_replay_seconds`) and `MKR_OUTBOX_KEEP_HOURS`; the inbox (`processed_events`)
past the broker's retention (`MKR_BROKER_RETENTION_HOURS`, plus a day), since only an event the broker
still holds can be redelivered; idempotency keys past `MKR_IDEMPOTENCY_KEEP_HOURS` (24). Each batch is
one short transaction (`DELETE … WHERE ctid IN (SELECT … LIMIT n)`), so pruning never holds long locks.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.scheduler import periodic
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.app import ServiceRuntime

log = logging.getLogger("mkr.pruning")

PRUNED = Counter("mkr_pruned_rows_total", "Rows deleted by pruning, per table", ["service", "table"])


@dataclass(frozen=True)
class PruneTarget:
    """Rows of `table` that `condition` (SQL over the table, with `:cutoff`) selects once older than `keep()`."""

    table: str
    condition: str
    keep: Callable[[], timedelta]


def shared_targets(settings: Settings, *, idempotency: bool) -> list[PruneTarget]:
    """What every service prunes: its outbox and its inbox, and its idempotency keys if it has them."""
    targets = [
        PruneTarget(
            "outbox", "published_at IS NOT NULL AND published_at < :cutoff",
            lambda: timedelta(hours=max(settings.outbox_keep_hours, settings.outbox_replay_seconds / 3600)),
        ),
        PruneTarget(
            "processed_events", "processed_at < :cutoff",
            lambda: timedelta(hours=settings.broker_retention_hours + 24),
        ),
    ]
    if idempotency:
        targets.append(
            PruneTarget("idempotency_keys", "created_at < :cutoff",
                        lambda: timedelta(hours=settings.idempotency_keep_hours))
        )
    return targets


async def prune_once(connection: AsyncConnection, target: PruneTarget, batch: int,
                     now: datetime | None = None) -> int:
    """Delete at most `batch` rows of the target past their age; returns how many."""
    cutoff = (now or datetime.now(UTC)) - target.keep()
    result = await connection.execute(
        sa.text(
            f"DELETE FROM {target.table} WHERE ctid IN "
            f"(SELECT ctid FROM {target.table} WHERE {target.condition} LIMIT :batch)"
        ),
        {"cutoff": cutoff, "batch": batch},
    )
    return int(result.rowcount or 0)


async def prune_all(runtime: ServiceRuntime, targets: Sequence[PruneTarget], batch: int) -> int:
    """One batch per table, each in its own transaction; the total deleted (more may be left if > 0)."""
    total = 0
    for target in targets:
        async with runtime.engine.begin() as connection:
            deleted = await prune_once(connection, target, batch)
        if deleted:
            PRUNED.labels(runtime.name, target.table).inc(deleted)
            total += deleted
    return total


def pruning_job(settings: Settings, targets: Sequence[PruneTarget]) -> Callable[[ServiceRuntime], Awaitable[None]]:
    """The scheduled pruning (shared.scheduler.periodic): again at once while a batch found rows."""

    async def scan(runtime: ServiceRuntime) -> int:
        deleted = await prune_all(runtime, targets, settings.prune_batch)
        if deleted:
            log.info("pruned", extra={"count": deleted})
        return 0 if deleted < settings.prune_batch else deleted

    return periodic("pruning", scan, lambda: settings.prune_seconds)


__all__ = ["PRUNED", "PruneTarget", "prune_all", "prune_once", "pruning_job", "shared_targets"]
