"""What one consumer transaction (a batch of up to `EventConsumer.MAX_BATCH` events) holds and reads once.

Locks. Alert inserts are serialized by one transaction-level advisory lock so that `seq` order is commit
order (the SSE stream resumes by seq). A batch takes that lock BEFORE anything else it locks (the bed watch's
municipality row, the projections' upserted rows), at its first event: every lock of a batch comes after the
alert lock, so two batches (two partitions, two replicas) never wait for each other in opposite orders — the
second waits at its first statement until the first commits
(tests/notifications/test_batches.py::test_two_batches_in_opposite_orders_do_not_deadlock).

Reads. The enabled alert rules and the live webhook subscriptions change only through the API. The consumer
keeps them between its transactions (`Reads`, one per handler) for as long as `consumer_reads_generation`
(bumped by a statement trigger on either table, visible with the commit of the change) has not moved: the
generation is read with the lock, in the same statement, and a batch that finds it moved reads both again
at its first need. The lookups of a member's e-mail address and of a member's shelter in the projections
are kept for one transaction only, and forgotten when an event of the batch writes that projection
(`forget_contacts`, `forget_shelters`), so an event sees what the events before it in the batch wrote, as in
a transaction of its own.

Writes. The alerts a batch raises are inserted together, in event order, when it commits (`PendingAlert`, a
`before_commit` hook of the session, services/notifications/events.py): one statement for the batch's
alerts and one for their e-mail rows, instead of one per alert. Their `seq` order is still commit order: the
batch holds the alert lock from its first event.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import domain

# pg_advisory_xact_lock key of alert inserts (services/notifications/transfers.py inserts alerts too).
ALERT_INSERT_LOCK = 7310401
_GENERATION = sa.text("SELECT generation FROM consumer_reads_generation WHERE id = 1")
_LOCK = sa.select(
    sa.func.pg_advisory_xact_lock(ALERT_INSERT_LOCK), _GENERATION.columns(sa.column("generation")).scalar_subquery()
)
# Municipality sets whose subscriptions are kept at most (then they are read again).
_MAX_KEPT = 10_000
_STATE = "mkr.notifications.batch"


@dataclass(frozen=True)
class Subscriber:
    """A live webhook subscription, as the consumer needs it (`access.receives`, the delivery row)."""

    id: uuid.UUID
    municipality: str
    owner_member_id: str | None
    event_types: frozenset[str]


@dataclass
class Reads:
    """The rules and subscriptions as of one reads generation (kept between transactions)."""

    generation: int | None = None
    rules: dict[str, list[domain.AlertRule]] | None = None  # enabled rules by event type
    subscribers: dict[tuple[str, ...], list[Subscriber]] = field(default_factory=dict)  # by municipalities

    def check(self, generation: int | None) -> None:
        """Forget everything kept when the generation moved (or when too many sets are kept)."""
        if generation is None or generation != self.generation or len(self.subscribers) > _MAX_KEPT:
            self.generation = generation
            self.rules = None
            self.subscribers = {}


@dataclass(frozen=True)
class PendingAlert:
    """An alert the batch raises, inserted with the others when the batch commits (one statement)."""

    row: dict[str, Any]  # the alerts row (its id chosen here)
    alert_type: str
    severity: str
    email: dict[str, Any] | None  # its e-mail delivery row, if its rule e-mails a member that has an address


@dataclass
class Batch:
    transaction: object  # the session's root transaction this state belongs to
    reads: Reads
    emails: dict[tuple[str, str], str | None] = field(default_factory=dict)  # (member id, municipality) -> address
    shelters: dict[str, str | None] = field(default_factory=dict)  # member id -> its shelter
    alerts: list[PendingAlert] = field(default_factory=list)  # raised, inserted at commit
    inserting: bool = False  # the commit hook that inserts `alerts` is registered

    def forget_contacts(self) -> None:
        self.emails.clear()

    def forget_shelters(self) -> None:
        self.shelters.clear()


async def begin(session: AsyncSession, reads: Reads | None = None) -> Batch:
    """The transaction's batch state; at its first event, the alert lock (before any other lock) and the
    reads generation, which `reads` (the handler's, else kept for this transaction only) is checked against."""
    state = session.info.get(_STATE)
    if isinstance(state, Batch) and state.transaction is session.sync_session.get_transaction():
        return state
    generation = (await session.execute(_LOCK)).one()[1]
    reads = reads or Reads()
    reads.check(generation)
    state = session.info[_STATE] = Batch(session.sync_session.get_transaction(), reads)
    return state
