"""The event backbone: the envelope (§9), the transactional outbox and its relay, idempotent consumers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError
from prometheus_client import Counter
from pydantic import AliasChoices, BaseModel, Field, PrivateAttr, ValidationError
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from shared import observability
from shared.contracts import (
    ALL_TOPICS,
    EVENT_TYPES,
    INTAKE_TOPIC,
    NOTIFICATIONS_TOPIC,
    REFERRAL_TOPIC,
    SCHEMA_VERSION,
    SHELTER_TOPIC,
    TOPIC_SOURCES,
    EventContracts,
    EventData,
    EventRejected,
    contracts_for,
    validate_data,
)
from shared.contracts.instant import EnvelopeInstant
from shared.kafka import client_options, group_membership, leave_group
from shared.listener import Listener
from shared.observability import (
    CONSUMER_LAG,
    CONSUMER_PARTITION_LAG,
    CONSUMER_RECREATED,
    EVENTS_CONSUMED,
    EVENTS_PUBLISHED,
    OUTBOX_OLDEST_UNPUBLISHED,
)
from shared.settings import Settings

log = logging.getLogger("mkr.events")

# Events a consumer refused to apply (shared/contracts): `reason` is one of contracts.REJECTION_REASONS.
EVENTS_REJECTED = Counter("mkr_events_rejected_total", "Events rejected unapplied by a consumer", ["reason"])
# Rejected records are kept in processed_events under an id derived from their position, never under the
# event id they claim (a forged event must not take the place of the real one).
_KNOWN_TYPES = frozenset(EVENT_TYPES)
_REJECTED_NAMESPACE = uuid.UUID("5b0c8a52-6f3e-4c1e-9d55-2f1d0e7a9c31")


class Envelope(BaseModel):
    """A CloudEvents 1.0 event in structured JSON mode (CONTRACT §9); `source` + `id` identify it.

    `municipality`, `schemaversion` and `traceparent` are extension attributes (lower-case letters and
    digits only). The former `schema_version` is still read, for one release; it is written as
    `schemaversion`.
    """

    specversion: Literal["1.0"] = "1.0"
    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: str
    source: str
    time: EnvelopeInstant = Field(default_factory=lambda: datetime.now(UTC))
    subject: str
    municipality: str
    schemaversion: int = Field(
        default=SCHEMA_VERSION, validation_alias=AliasChoices("schemaversion", "schema_version")
    )
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any] = Field(default_factory=dict)
    # CloudEvents distributed-tracing extension: the W3C trace context of the change (only with tracing on).
    traceparent: str | None = Field(default=None, max_length=128, exclude_if=lambda value: value is None)
    # The data as its contract model, once validated (by the consumer's check or by typed()).
    _typed: EventData | None = PrivateAttr(default=None)

    def typed(self) -> EventData:
        """`data` as the model of this event's type (shared/contracts); EventRejected if it is not one."""
        if self._typed is None:
            known = EVENT_TYPES.get(self.type)
            if known is None:
                raise EventRejected("unknown_type")
            self._typed = validate_data(known[1], self.data)
        return self._typed


def event_of(
    data: EventData, *, subject: str, municipality: str, event_id: uuid.UUID | None = None
) -> Envelope:
    """The envelope of a typed event: its type, and its `source` (the topic's service), come from the model."""
    envelope = Envelope(
        id=event_id or uuid.uuid4(),
        type=data.TYPE,
        source=TOPIC_SOURCES[data.TOPIC],
        subject=subject,
        municipality=municipality,
        data=data.model_dump(mode="json", exclude_unset=True),
    )
    envelope._typed = data
    return envelope


# Tables every service carries in its own database (created by its first migration).
event_metadata = sa.MetaData()

outbox_table = sa.Table(
    "outbox",
    event_metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("event_id", sa.Uuid, nullable=False, unique=True),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("published_at", sa.DateTime(timezone=True)),
)
sa.Index("ix_outbox_unpublished", outbox_table.c.id, postgresql_where=outbox_table.c.published_at.is_(None))
# Statements built once, so compiled once: their rows go as parameters (several rows: one multi-row INSERT).
_OUTBOX_INSERT = outbox_table.insert()

# The next offset the broker acknowledged per partition: a broker that comes back with less has lost
# events it had accepted (a memory broker restarted empty, a topic recreated), and the relay replays.
outbox_offsets_table = sa.Table(
    "outbox_offsets",
    event_metadata,
    sa.Column("topic", sa.Text, primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("next_offset", sa.BigInteger, nullable=False),
)
_offsets_insert = pg_insert(outbox_offsets_table)
_OFFSETS_UPSERT = _offsets_insert.on_conflict_do_update(
    index_elements=[outbox_offsets_table.c.topic, outbox_offsets_table.c.partition],
    set_={"next_offset": sa.func.greatest(outbox_offsets_table.c.next_offset, _offsets_insert.excluded.next_offset)},
)

processed_events_table = sa.Table(
    "processed_events",
    event_metadata,
    sa.Column("consumer", sa.Text, primary_key=True),
    sa.Column("event_id", sa.Uuid, primary_key=True),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="done"),
    sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)
# The inbox rows of a batch in one statement of fixed text (one prepared statement whatever the batch size).
_INBOX_INSERT = sa.text(
    "INSERT INTO processed_events (consumer, event_id, event_type) "
    "SELECT :consumer, e.event_id, e.event_type FROM unnest(:ids, :types) AS e(event_id, event_type) "
    "ON CONFLICT DO NOTHING RETURNING event_id"
).bindparams(
    sa.bindparam("ids", type_=sa.ARRAY(sa.Uuid())),
    sa.bindparam("types", type_=sa.ARRAY(sa.Text())),
).columns(event_id=sa.Uuid())


def create_event_tables(op: Any) -> None:
    """Called from each service's first migration: the outbox, its NOTIFY trigger and the inbox."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.Uuid, nullable=False, unique=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("published_at", sa.DateTime(timezone=True)),
    )
    op.execute("CREATE INDEX ix_outbox_unpublished ON outbox (id) WHERE published_at IS NULL")
    op.execute(
        """
        CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_notify('mkr_outbox', ''); RETURN NULL; END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()"
    )
    op.create_table(
        "processed_events",
        sa.Column("consumer", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Uuid, primary_key=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="done"),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def create_outbox_offsets_table(op: Any) -> None:
    """Called from a service's migration (added after the first one)."""
    op.create_table(
        "outbox_offsets",
        sa.Column("topic", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
    )


async def publish(session: AsyncSession, settings: Settings, topic: str, event: Envelope, key: str) -> None:
    """Write the event into the outbox inside the caller's transaction.

    Call it after the change it announces (and after any row lock on the case), so that
    two transactions about one case get outbox ids in commit order. In an event consumer's transaction
    the row goes in at the batch's end (`insert_rows`), still under those locks and in publishing order.
    """
    await publish_many(session, settings, topic, [(event, key)])


async def publish_many(
    session: AsyncSession, settings: Settings, topic: str, events: Sequence[tuple[Envelope, str]]
) -> None:
    """`publish` for several events in one statement; they get outbox ids (so go out) in the given order."""
    await _insert_outbox(session, settings, [(topic, event, key) for event, key in events])


async def _insert_outbox(
    session: AsyncSession, settings: Settings, rows: Sequence[tuple[str, Envelope, str]]
) -> None:
    if not rows:
        return
    await insert_rows(session, _OUTBOX_INSERT, [_outbox_row(settings, topic, event, key) for topic, event, key in rows])


# session.info's key of the rows a consumer's transaction defers to its end (`insert_rows`).
_DEFERRED = "mkr.deferred_rows"


async def insert_rows(session: AsyncSession, statement: sa.Insert, rows: Sequence[dict[str, Any]]) -> None:
    """Insert `rows` with `statement` (an INSERT of fixed text, its rows as parameters), now or, in an event
    consumer's transaction, at its end: every row a batch's events insert with one statement goes to the
    database in one round trip, in the order they came, just before the commit.

    Only for rows nothing reads in the same transaction, and whose order relative to other tables' rows does
    not matter (no trigger or foreign key between them): the outbox, referral's routing decisions. A reader
    that does need them first calls `flush_deferred`.
    """
    if not rows:
        return
    deferred: dict[sa.Insert, list[dict[str, Any]]] | None = session.info.get(_DEFERRED)
    if deferred is None:
        await session.execute(statement, list(rows))
    else:
        deferred.setdefault(statement, []).extend(rows)


async def flush_deferred(session: AsyncSession) -> None:
    """Insert the rows `insert_rows` deferred in this transaction (each statement's in one round trip)."""
    deferred: dict[sa.Insert, list[dict[str, Any]]] | None = session.info.get(_DEFERRED)
    if not deferred:
        return
    pending = list(deferred.items())
    deferred.clear()
    for statement, rows in pending:
        await session.execute(statement, rows)


def _outbox_row(settings: Settings, topic: str, event: Envelope, key: str) -> dict[str, Any]:
    if (traceparent := observability.current_traceparent()) is not None:
        event.traceparent = event.traceparent or traceparent
    return {"event_id": event.id, "topic": settings.topic(topic), "key": key, "payload": event.model_dump_json()}


def outbox_row(settings: Settings, event: Envelope, key: str) -> dict[str, Any]:
    """The outbox row of a contract event (`event_id`, `topic`, `key`, `payload`, the trace context set), for a
    caller that inserts it in a statement of its own (intake's report: in its last statement, numbering.py).
    `emit` is the usual way."""
    return _outbox_row(settings, EVENT_TYPES[event.type][0], event, key)


async def emit(
    session: AsyncSession,
    settings: Settings,
    data: EventData,
    *,
    subject: str,
    municipality: str,
    key: str | None = None,
    event_id: uuid.UUID | None = None,
) -> Envelope:
    """Publish a typed event (the producers' one way): on its model's topic, keyed by `key` (else `subject`)."""
    envelope = event_of(data, subject=subject, municipality=municipality, event_id=event_id)
    await publish_events(session, settings, [(envelope, key or subject)])
    return envelope


async def publish_events(session: AsyncSession, settings: Settings, events: Sequence[tuple[Envelope, str]]) -> None:
    """`publish_many` for contract events (with their keys): each on the topic of its type, in one statement."""
    await _insert_outbox(session, settings, [(EVENT_TYPES[event.type][0], event, key) for event, key in events])


def make_event(
    *, type_: str, source: str, subject: str, municipality: str, data: dict[str, Any]
) -> Envelope:
    """An envelope of untyped data (tests and tools; the services publish typed events with `emit`)."""
    return Envelope(type=type_, source=source, subject=subject, municipality=municipality, data=data)


def producer_for(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        linger_ms=0,
        client_id="mkr",
        **client_options(settings),
    )


async def ensure_topics(settings: Settings, topics: Sequence[str] = ALL_TOPICS) -> None:
    """Create the contract's topics; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=settings.kafka_request_timeout_ms,
        **client_options(settings),
    )
    await asyncio.wait_for(admin.start(), timeout=10)
    try:
        existing = set(await admin.list_topics())
        wanted = [settings.topic(t) for t in topics if settings.topic(t) not in existing]
        if wanted:
            await admin.create_topics(
                [
                    NewTopic(
                        name,
                        num_partitions=settings.kafka_topic_partitions,
                        replication_factor=settings.kafka_replication_factor,
                    )
                    for name in wanted
                ]
            )
    finally:
        await asyncio.wait_for(admin.close(), timeout=10)


async def _stop(client: AIOKafkaProducer | AIOKafkaConsumer | None, timeout: float = 10) -> None:
    if client is None:
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.stop(), timeout=timeout)


def _backoff(attempt: int, base: float = 0.2, cap: float = 5.0) -> float:
    return min(cap, base * 2 ** min(attempt, 10)) * (0.5 + random.random() / 2)


class OutboxRelay:
    """Publishes outbox rows in id order; one relay at a time per database (advisory lock).

    A failed batch is rolled back and retried, so a broker outage delays events but never
    loses or reorders them. Wakes on NOTIFY from the outbox trigger, else polls.
    """

    LOCK_KEY = 7310002
    LOSS_CHECK_SECONDS = 10.0
    BATCH = 500  # rows per batch; a full one is followed at once by the next

    def __init__(
        self, settings: Settings, engine: AsyncEngine, listen_dsn: dict[str, object], name: str = "service"
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.listen_dsn = listen_dsn
        self.name = name
        self.producer: AIOKafkaProducer | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listen_task: asyncio.Task[None] | None = None
        # Woken by the outbox's NOTIFY trigger, and at each (re)connect: rows may have arrived meanwhile.
        self.listener = Listener(
            f"{name}.outbox", listen_dsn, {"mkr_outbox": lambda _: self._wake.set()}, self._stopping,
            on_connect=self._wake.set,
        )
        self.healthy = False
        self.pending = 0
        # Since when every attempt has failed (None: the last one succeeded), and the last failure's cause.
        self.failing_since: float | None = None
        self.last_error: str | None = None
        # Set when the broker refused InitProducerId while MKR_KAFKA_ENABLE_IDEMPOTENCE is on.
        self.idempotence_unsupported = False

    def failing_for(self) -> float:
        """Seconds during which every attempt of the relay has failed (0 when the last one succeeded)."""
        return 0.0 if self.failing_since is None else time.monotonic() - self.failing_since

    def wake(self) -> None:
        """Publish now. Not needed after a commit: the outbox's NOTIFY trigger wakes the relay (any replica)."""
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")
        self._listen_task = asyncio.create_task(self.listener.run(), name="outbox-listen")

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        for task in (self._task, self._listen_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(task, timeout=10)
        await _stop(self.producer)
        self.producer = None

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            producer = producer_for(self.settings)
            try:
                try:
                    await asyncio.wait_for(producer.start(), timeout=15)
                except Exception as exc:
                    if _refused_idempotence(self.settings, exc):
                        raise IdempotenceUnsupported() from exc
                    raise
                self.idempotence_unsupported = False
                # Also after every failure: a broker that came back empty has lost the topics.
                await asyncio.wait_for(ensure_topics(self.settings), timeout=20)
                await asyncio.wait_for(self.replay_if_broker_lost_events(), timeout=60)
            except BaseException:
                await _stop(producer)
                raise
            self.producer = producer
        return self.producer

    async def replay_if_broker_lost_events(self) -> int:
        """Check that the last record the broker acknowledged per partition is still there; replay if not.

        Events published within `outbox_replay_seconds` go out again, in their order; consumers are
        idempotent, so those the broker did keep change nothing. Returns the number of rows requeued.
        """
        async with self.engine.connect() as conn:
            known = (await conn.execute(sa.select(outbox_offsets_table))).all()
        if not known:
            return 0
        # Reading the record back, not asking for end offsets: Tansu answers those per batch, not per record.
        probe = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False, group_id=None,
            auto_offset_reset="none", request_timeout_ms=self.settings.kafka_request_timeout_ms + 10000,
            **client_options(self.settings),
        )
        await asyncio.wait_for(probe.start(), timeout=15)
        lost: set[str] = set()
        try:
            for row in known:
                if row.topic in lost:
                    continue
                if not await _still_there(probe, row.topic, row.partition, row.next_offset - 1):
                    lost.add(row.topic)
        finally:
            await _stop(probe)
        if not lost:
            return 0
        async with self.engine.begin() as conn:
            return await self._requeue(conn, sorted(lost))

    async def _requeue(self, conn: AsyncConnection, topics: list[str]) -> int:
        """Mark the topics' recently published rows unpublished, so they go out again in id order."""
        requeued = await conn.execute(
            outbox_table.update()
            .where(
                outbox_table.c.topic.in_(topics),
                outbox_table.c.published_at.is_not(None),
                outbox_table.c.published_at
                > sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, self.settings.outbox_replay_seconds),
            )
            .values(published_at=None)
        )
        await conn.execute(outbox_offsets_table.delete().where(outbox_offsets_table.c.topic.in_(topics)))
        log.warning("the broker lost acknowledged events; replaying", extra={"count": requeued.rowcount})
        return int(requeued.rowcount or 0)

    async def _run(self) -> None:
        attempt = 0
        checked_at = 0.0
        while not self._stopping.is_set():
            # Cleared before the batch reads: a NOTIFY arriving while it runs wakes the wait below at once.
            self._wake.clear()
            try:
                sent = await self.publish_batch()
                if sent < self.BATCH and time.monotonic() - checked_at > self.LOSS_CHECK_SECONDS:
                    # Also when idle: a broker restarted empty between two quiet moments lost events too.
                    checked_at = time.monotonic()
                    await asyncio.wait_for(self.replay_if_broker_lost_events(), timeout=60)
                attempt = 0
                self.healthy = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.healthy = False
                attempt += 1
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                if isinstance(exc, IdempotenceUnsupported):
                    self.idempotence_unsupported = True
                    self.last_error = "idempotence_unsupported"
                    log.error(
                        "the broker refused InitProducerId: it has no idempotent producer. Set "
                        "MKR_KAFKA_ENABLE_IDEMPOTENCE=false for this broker (Tansu), or use one that has it; "
                        "nothing is published until then",
                        extra={"service": self.name, "error_class": type(exc.__cause__).__name__,
                               "attempt": attempt},
                    )
                else:
                    self.last_error = type(exc).__name__
                    log.warning("outbox relay failed, will retry", extra={"error_class": type(exc).__name__})
                # A fresh producer after a failure: the old one may hold a dead broker's metadata.
                if self.producer is not None:
                    CONSUMER_RECREATED.labels(f"{self.name}.relay", "error").inc()
                await _stop(self.producer, timeout=5)
                self.producer = None
                await self._measure_oldest()
                await asyncio.sleep(_backoff(attempt, 0.2, 30.0 if self.idempotence_unsupported else 5.0))
                continue
            self.failing_since = None
            self.last_error = None
            if sent < self.BATCH:
                # Caught up (a full batch goes straight on): wait for a NOTIFY — one that came while the batch
                # ran has set the event already — or the poll. No empty batch to learn that nothing is left.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.settings.outbox_poll_seconds)

    @property
    def _oldest_gauge(self) -> Any:
        return OUTBOX_OLDEST_UNPUBLISHED.labels(self.name)

    async def _measure_oldest(self) -> None:
        """While publishing fails: the age of the oldest unpublished row, for the metric."""
        with contextlib.suppress(Exception):
            async with self.engine.connect() as conn:
                oldest = await asyncio.wait_for(
                    conn.scalar(
                        sa.select(sa.func.extract("epoch", sa.func.now() - sa.func.min(outbox_table.c.created_at)))
                        .where(outbox_table.c.published_at.is_(None))
                    ),
                    timeout=5,
                )
            self._oldest_gauge.set(float(oldest or 0))

    async def publish_batch(self, limit: int = BATCH) -> int:
        """Publish up to `limit` unpublished rows, in id order, under the relay lock; how many went out.

        Round trips: BEGIN, the lock and the batch (one statement), the rows marked published and the
        offsets read (one statement), the offsets written, COMMIT; the producer's send in between."""
        async with self.engine.connect() as conn, conn.begin():
            # Before reading the batch, under the lock: a fresh producer first requeues what a restarted broker
            # lost, and those older events must go out ahead of this batch.
            if self.producer is None and not await conn.scalar(
                sa.select(sa.func.pg_try_advisory_xact_lock(self.LOCK_KEY))
            ):
                return 0
            producer = await self._ensure_producer()
            batch = (await conn.execute(_RELAY_BATCH, {"lock": self.LOCK_KEY, "limit": limit})).all()
            if not batch[0].held:  # the statement answers one row at least
                return 0  # another relay holds the lock (it publishes)
            rows = [row for row in batch if row.id is not None]
            self.pending = len(rows)
            oldest = self._oldest_gauge
            if not rows:
                oldest.set(0)
                return 0
            oldest.set(max(0.0, (datetime.now(UTC) - rows[0].created_at).total_seconds()))
            futures = [
                await producer.send(
                    row.topic, value=row.payload.encode(), key=row.key.encode(), headers=_trace_headers(row)
                )
                for row in rows
            ]
            acknowledged = await asyncio.wait_for(
                asyncio.gather(*futures), timeout=self.settings.kafka_request_timeout_ms / 1000 + 5
            )
            ends: dict[tuple[str, int], int] = {}
            firsts: dict[tuple[str, int], int] = {}
            for meta in acknowledged:
                tp = (meta.topic, meta.partition)
                ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
                firsts[tp] = min(firsts.get(tp, meta.offset), meta.offset)
            before = {
                (row.topic, row.partition): row.next_offset
                for row in (await conn.execute(_RELAY_PUBLISHED, {"ids": [row.id for row in rows]})).all()
            }
            # Offsets only grow: an acknowledgement below what the broker confirmed before means it lost those.
            lost = sorted({t for (t, p), first in firsts.items() if first < before.get((t, p), 0)})
            EVENTS_PUBLISHED.inc(len(rows))
            self.pending = 0
            if len(rows) < limit:
                oldest.set(0)
            if lost:
                await self._requeue(conn, lost)
                ends = {tp: n for tp, n in ends.items() if tp[0] not in lost}
            if ends:
                await conn.execute(
                    _OFFSETS_UPSERT, [{"topic": t, "partition": p, "next_offset": n} for (t, p), n in ends.items()]
                )
            return len(rows)


# The relay's lock (re-entrant within its transaction) and its batch in one statement: a row with held false
# when another relay holds the lock; else the unpublished rows in id order, or one row of NULLs when none is.
# (A CTE calling a volatile function is materialized: the lock is tried once.)
_RELAY_BATCH = sa.text(
    """
    WITH relay_lock AS (SELECT pg_try_advisory_xact_lock(:lock) AS held)
    SELECT relay_lock.held, o.id, o.topic, o.key, o.payload, o.created_at
    FROM relay_lock LEFT JOIN LATERAL (
        SELECT id, topic, key, payload, created_at FROM outbox
        WHERE relay_lock.held AND published_at IS NULL ORDER BY id LIMIT :limit
    ) AS o ON true
    ORDER BY o.id
    """
)
# The published rows marked, and the offsets the broker had confirmed before (one round trip).
_RELAY_PUBLISHED = sa.text(
    """
    WITH marked AS (UPDATE outbox SET published_at = now() WHERE id = ANY(:ids))
    SELECT topic, partition, next_offset FROM outbox_offsets
    """
)


class IdempotenceUnsupported(Exception):
    """The broker refused InitProducerId while MKR_KAFKA_ENABLE_IDEMPOTENCE is on (Tansu has no idempotent producer)."""


def _refused_idempotence(settings: Settings, exc: BaseException) -> bool:
    """True when starting an idempotent producer failed with the broker's answer, not with the network."""
    from aiokafka import errors

    if not settings.kafka_enable_idempotence or isinstance(exc, TimeoutError | OSError):
        return False
    transient = (
        errors.KafkaConnectionError, errors.NodeNotReadyError, errors.RequestTimedOutError,
        errors.KafkaTimeoutError, errors.CoordinatorNotAvailableError, errors.NotCoordinatorError,
    )
    return isinstance(exc, errors.KafkaError) and not isinstance(exc, transient)


def _trace_headers(row: Any) -> list[tuple[str, bytes]] | None:
    """The Kafka `traceparent` header: a producer span, child of the context stored in the outbox row."""
    if (parent := observability.traceparent_in(row.payload)) is None:
        return None
    with observability.span(f"{row.topic} publish", kind="PRODUCER", parent=parent,
                            **{"messaging.system": "kafka", "messaging.destination.name": row.topic}):
        traceparent = observability.current_traceparent()
    return [("traceparent", traceparent.encode())] if traceparent else None


async def _still_there(probe: AIOKafkaConsumer, topic: str, partition: int, offset: int) -> bool:
    from aiokafka.errors import OffsetOutOfRangeError

    tp = TopicPartition(topic, partition)
    probe.assign([tp])
    probe.seek(tp, offset)
    try:
        batch = await probe.getmany(tp, timeout_ms=3000, max_records=1)
    except OffsetOutOfRangeError:
        return False
    return any(record.offset == offset for record in batch.get(tp, []))


Handler = Callable[[AsyncSession, Envelope], Awaitable[None]]
# A handler's optional `prepare_batch(session, events)`: called once per batch, in its transaction, with the
# events about to be applied (in order, more than one), before their handlers run one by one. It may do at
# once the work of events whose effect does not depend on the batch's other events (shared/dispatch.py).
BatchPreparer = Callable[[AsyncSession, Sequence[Envelope]], Awaitable[None]]

# The consumer loop comes round at least every ~2.5 s when it handles nothing (getmany bounded at 2 s):
# a longer gap between two watchdog checks means that the loop itself was frozen.
_FROZEN_GAP = 5.0


class ConsumerStalled(Exception):
    """Raised by a consumer's watchdog: the consumer is stuck and is to be recreated."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class EventConsumer:
    """An idempotent consumer: the event id is stored with the effect in one transaction.

    The records a fetch brings for one partition are applied in order in ONE transaction: the event
    ids go into processed_events in one statement, ids already there (or repeated in the batch) are
    skipped, and one commit covers them all. If that transaction fails, it is rolled back and the
    events are applied again one by one, each in its own transaction, so one bad event cannot hold
    back the others. Offsets are committed explicitly after the effect; a failing consumer is
    stopped and a new one created. An event whose handler keeps failing is recorded as `failed` in
    processed_events (for operators) after `max_attempts`, so one bad event cannot stall a topic.

    A valid event of a type the handler has nothing to do for (`acts_on`, shared/dispatch.py) is acknowledged
    without a transaction or an inbox row, and counted as `ignored`.

    Per batch, not per event: what its handlers publish goes into the outbox in one statement at its end
    (`insert_rows`), and a handler's `prepare_batch`, if it has one, may do at once the work of events that
    no other event of the batch bears on (referral: the upserts of new cases).
    """

    # Events per transaction: bounds how long a batch holds its locks, and how long before its commit
    # the first event's effects were computed.
    MAX_BATCH = 50

    def __init__(
        self,
        *,
        name: str,
        settings: Settings,
        topics: Sequence[str],
        sessions: async_sessionmaker[AsyncSession],
        handler: Handler,
        max_attempts: int = 5,
        max_batch: int | None = None,
        validate: bool = True,
    ) -> None:
        self.name = name
        # Every envelope is checked against the event contract before it is applied (off only in tests
        # of the backbone itself, whose events are no service's).
        self.contracts: EventContracts | None = contracts_for(settings.kafka_topic_prefix) if validate else None
        self.max_batch = max_batch or self.MAX_BATCH
        self.settings = settings
        self.topics = [settings.topic(t) for t in topics]
        self.sessions = sessions
        self.handler = handler
        self.max_attempts = max_attempts
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.healthy = False
        # The watchdog's state: since when the consumer holds no partition (None: it holds some), and
        # why it was last recreated.
        self.unassigned_since: float | None = time.monotonic()
        self.last_recreated_reason: str | None = None
        self._committed: dict[TopicPartition, int] = {}
        self._positions: dict[TopicPartition, int] = {}
        # Since when the consumer has been behind at a position it has not left (None: it is not).
        self._behind_since: float | None = None
        self._checked_at = 0.0
        # When the watchdog last finished, and when it last found that the loop had been frozen.
        self._watched_at = time.monotonic()
        self._thawed_at = 0.0
        self._suspect = False
        self._failing_since = 0.0
        self._started_at = time.monotonic()
        self._broker_down_at = 0.0

    @property
    def group_id(self) -> str:
        return f"{self.settings.kafka_topic_prefix}mkr-{self.name}"

    def unassigned_for(self) -> float:
        """Seconds this consumer has held no partition (0 while it holds some)."""
        return 0.0 if self.unassigned_since is None else time.monotonic() - self.unassigned_since

    async def start(self) -> None:
        self._stopping.clear()
        self.unassigned_since = time.monotonic()
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self.name}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._task, timeout=15)
        if self.consumer is not None:
            await self._retire(self.consumer)
        self.unassigned_since = time.monotonic()

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=max(self.settings.kafka_request_timeout_ms, 10000) + 30000,
            session_timeout_ms=10000,
            heartbeat_interval_ms=3000,
            metadata_max_age_ms=5000,
            fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
            client_id=f"mkr-{self.name}",
            **client_options(self.settings),
        )

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            consumer = self._new_consumer()
            self.consumer = consumer
            self._reset_watch()
            try:
                # Also after every recreation: a broker that came back empty has lost the topics.
                await asyncio.wait_for(ensure_topics(self.settings), timeout=20)
                await asyncio.wait_for(consumer.start(), timeout=30)
                self.healthy = True
                self._started_at = time.monotonic()
                while not self._stopping.is_set():
                    if await self._step(consumer):
                        attempt = 0
                    await self._watch(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.healthy = False
                attempt += 1
                self._note_recreation(exc, attempt)
                # The old member out of the group first: its replacement joins after the pause.
                await self._retire(consumer)
                await asyncio.sleep(_backoff(attempt, 0.5, 5.0))
            finally:
                await self._retire(consumer)

    async def _step(self, consumer: AIOKafkaConsumer) -> bool:
        """One fetch, applied and committed; True when records were committed."""
        try:
            # Bounded: during a rebalance getmany waits for the assignment however long it takes. The
            # cancellation loses nothing: aiokafka hands records over (and moves the position) without
            # an await in between, and fetches on in the background.
            batches = await asyncio.wait_for(consumer.getmany(timeout_ms=500, max_records=200), 2.0)
        except TimeoutError:
            return False
        if not batches:
            return False
        # The broker was away: make sure it still has the group's offsets first.
        if self._suspect and await self._watch(consumer, force=True):
            return False
        # Partitions side by side, each in order: a case's events share a key, so a partition.
        await asyncio.gather(*(self._handle_all(records) for records in batches.values()))
        offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
        try:
            await asyncio.wait_for(consumer.commit(offsets), timeout=self._call_timeout)
        except CommitFailedError:
            # A rebalance (or a broker back empty, that knows no member): aiokafka rejoins by itself,
            # and these events come again (applied once). A new consumer here would leave this member
            # behind in the group and slow the join.
            log.info("offset commit refused by a rebalance; rejoining", extra={"consumer": self.name})
            return False
        self._committed.update(offsets)
        self._behind_since = None
        return True

    def _note_recreation(self, exc: Exception, attempt: int) -> None:
        reason = exc.reason if isinstance(exc, ConsumerStalled) else f"failed ({type(exc).__name__})"
        self.last_recreated_reason = reason
        CONSUMER_RECREATED.labels(self.name, exc.code if isinstance(exc, ConsumerStalled) else "error").inc()
        log.warning(
            f"consumer {reason}; recreating it",
            extra={"consumer": self.name, "error_class": type(exc).__name__, "attempt": attempt},
        )

    async def _retire(self, consumer: AIOKafkaConsumer) -> None:
        """Stop `consumer` and take its member out of the group (a second call does nothing)."""
        if consumer is self.consumer:
            self.consumer = None
        membership = group_membership(consumer)
        await _stop(consumer)
        if membership is not None and membership[1] == 0:
            # aiokafka leaves only from generation 1 on; Tansu's first generation is 0 (shared/kafka.py).
            await leave_group(self.settings, self.group_id, membership[0])
        if self.unassigned_since is None:
            self.unassigned_since = time.monotonic()

    @property
    def _call_timeout(self) -> float:
        return max(self.settings.kafka_request_timeout_ms / 1000, 5.0) + 5.0

    def _reset_watch(self) -> None:
        self._committed = {}
        self._positions = {}
        self._behind_since = None
        self._checked_at = 0.0
        self._watched_at = time.monotonic()
        self._thawed_at = 0.0
        self._suspect = False

    def _note_freeze(self, now: float) -> None:
        """A loop that did not come round for long was frozen (a synchronous stretch on it, a starved
        process): nobody could fetch meanwhile, so that time counts for no stall clock."""
        if now - self._watched_at > max(_FROZEN_GAP, self.settings.kafka_consumer_stall_seconds / 3):
            self._thawed_at = now
            self._behind_since = None

    async def _watch(self, consumer: AIOKafkaConsumer, *, force: bool = False) -> bool:
        """The watchdog: raise ConsumerStalled when this consumer should be recreated.

        Stuck states it notices, each only while the broker answers (a new consumer cannot reach a dead
        broker either, and a member left behind on it slows the next join): no assignment (a group join
        that never completes), no fetch progress while the partitions' end offsets are ahead, offset
        requests unanswered. A broker that came back without the group's committed offsets (restarted
        empty) has its partitions read again from the start; returns True then, and the records in hand
        are dropped (they come again, the consumer is idempotent). The clocks count only time the loop
        ran: a frozen loop is no stalled consumer.
        """
        now = time.monotonic()
        self._note_freeze(now)
        try:
            return await self._watch_now(consumer, now, force)
        finally:
            self._watched_at = time.monotonic()

    async def _watch_now(self, consumer: AIOKafkaConsumer, now: float, force: bool) -> bool:
        stall = self.settings.kafka_consumer_stall_seconds
        assignment = consumer.assignment()
        if not assignment:
            if self.unassigned_since is None:
                self.unassigned_since = now
            CONSUMER_LAG.labels(self.name).set(0)
            # Measured from this consumer's start, from the broker's last silence and from a freeze too.
            if now - max(self.unassigned_since, self._started_at, self._broker_down_at, self._thawed_at) > stall:
                if await broker_reachable(self.settings):
                    raise ConsumerStalled("no_assignment", f"had no partition assignment for {stall:g} s")
                self._broker_down_at = time.monotonic()
            return False
        if self.unassigned_since is not None:
            self.unassigned_since = None
            self._behind_since = None
        if not force and now - self._checked_at < min(2.0, stall / 3):
            return False
        self._checked_at = now
        offsets = await self._offsets(consumer, sorted(assignment), now, force)
        if offsets is None:
            return False
        ends, committed, positions = offsets
        lost = [tp for tp, offset in committed.items() if offset is None or offset < self._committed[tp]]
        if lost:
            log.warning(
                "consumer found the broker without the group's committed offsets (restarted empty?); "
                "reading its partitions from the start",
                extra={"consumer": self.name, "count": len(lost)},
            )
            await consumer.seek_to_beginning(*lost)
            for tp in lost:
                del self._committed[tp]
            self._behind_since = None
            return True
        self._judge_progress(consumer, ends, positions, now)
        return False

    async def _offsets(
        self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition], now: float, force: bool
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int | None], dict[TopicPartition, int]] | None:
        """End offsets, committed offsets (of the partitions this consumer committed) and positions;
        None while the broker does not answer them (ConsumerStalled once that lasts)."""
        stall = self.settings.kafka_consumer_stall_seconds
        timeout = min(self._call_timeout, 5.0)
        try:
            ends = await asyncio.wait_for(consumer.end_offsets(partitions), timeout=timeout)
            committed = {
                tp: await asyncio.wait_for(consumer.committed(tp), timeout=timeout)
                for tp in partitions
                if tp in self._committed
            }
            positions = {tp: await asyncio.wait_for(consumer.position(tp), timeout=timeout) for tp in partitions}
        except (asyncio.CancelledError, ConsumerStalled):
            raise
        except Exception as exc:
            # The broker is away (or busy); when it answers again, check its offsets before going on.
            if not self._suspect:
                self._suspect = True
                self._failing_since = now
            if force:
                raise ConsumerStalled("offsets_unanswered", "could not check the broker's offsets") from exc
            if now - max(self._failing_since, self._broker_down_at, self._thawed_at) > stall:
                if await broker_reachable(self.settings):
                    reason = f"got no offsets for {stall:g} s from a broker that answers"
                    raise ConsumerStalled("offsets_unanswered", reason) from exc
                self._broker_down_at = time.monotonic()
            return None
        self._suspect = False
        return ends, committed, positions

    def _judge_progress(self, consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int],
                        positions: dict[TopicPartition, int], now: float) -> None:
        """Raise ConsumerStalled when the position has stood still, behind, for the stall limit.

        The clock starts at the first check that finds the consumer behind at a position it has not
        left since: time caught up (lag 0) is no stall, so a record arriving after a long idle spell,
        seen by a check before the loop drained it, is behind for 0 s, not for the idle spell.
        """
        stall = self.settings.kafka_consumer_stall_seconds
        # Tansu answers end offsets per batch (the last batch's base offset + 1): the fetched high-water
        # mark, when larger, is nearer the truth.
        behind = {tp: max(0, max(ends.get(tp, 0), consumer.highwater(tp) or 0) - positions[tp]) for tp in positions}
        for tp, records in behind.items():
            CONSUMER_PARTITION_LAG.labels(self.name, tp.topic, str(tp.partition)).set(records)
        lag = sum(behind.values())
        CONSUMER_LAG.labels(self.name).set(lag)
        if positions != self._positions or lag == 0:
            self._positions = positions
            self._behind_since = None
        elif self._behind_since is None:
            self._behind_since = now
        elif now - self._behind_since > stall:
            raise ConsumerStalled("no_progress", f"fetched nothing for {stall:g} s while {lag} records wait")

    def _parse(self, record: ConsumerRecord[bytes, bytes]) -> Envelope | EventRejected:
        """The record's envelope if it may be applied, else why not (nothing of its payload is kept)."""
        try:
            event = Envelope.model_validate_json(record.value or b"")
        except ValidationError:
            return EventRejected("malformed")
        if self.contracts is not None:
            try:
                event._typed = self.contracts.check(record.topic, event)
            except EventRejected as rejected:
                return rejected
        return event

    async def _reject(self, rejected: list[tuple[ConsumerRecord[bytes, bytes], EventRejected]]) -> None:
        """Record rejected records as `rejected:<reason>` in processed_events: counted, logged, never applied."""
        rows = []
        for record, why in rejected:
            claimed = _claimed_type(record)
            rows.append({
                "consumer": self.name,
                "event_id": uuid.uuid5(_REJECTED_NAMESPACE, f"{record.topic}/{record.partition}/{record.offset}"),
                "event_type": claimed if claimed in _KNOWN_TYPES else "?",
                "status": f"rejected:{why.reason}",
            })
        async with self.sessions() as session, session.begin():
            inserted = (
                await session.execute(
                    pg_insert(processed_events_table).values(rows).on_conflict_do_nothing()
                    .returning(processed_events_table.c.event_id)
                )
            ).scalars().all()
        fresh = set(inserted)
        for (record, why), row in zip(rejected, rows, strict=True):
            if row["event_id"] not in fresh:
                continue  # the same record again (a redelivery): counted once
            EVENTS_REJECTED.labels(why.reason).inc()
            EVENTS_CONSUMED.labels(self.name, "rejected").inc()
            log.warning(
                f"event rejected: {why.reason}",
                extra={"consumer": self.name, "offset": record.offset, "event_type": row["event_type"]},
            )

    async def _handle_all(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """One partition's records, in order: a transaction per chunk, one by one if a chunk fails."""
        parsed = [(record, self._parse(record)) for record in records]
        rejected = [(record, why) for record, why in parsed if isinstance(why, EventRejected)]
        if rejected:
            await self._reject(rejected)
        events = [event for _, event in parsed if isinstance(event, Envelope)]
        acts_on: Callable[[str], bool] | None = getattr(self.handler, "acts_on", None)
        if acts_on is not None:  # a registry (shared/dispatch.py): the types it has nothing to do for are skipped
            kept = [event for event in events if acts_on(event.type)]
            if len(kept) < len(events):
                EVENTS_CONSUMED.labels(self.name, "ignored").inc(len(events) - len(kept))
            events = kept
        for at in range(0, len(events), self.max_batch):
            chunk = events[at : at + self.max_batch]
            if len(chunk) > 1:
                try:
                    done = await self.apply_batch(chunk)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if _is_outage(exc):
                        raise  # the database is away: recreate the consumer, the events come again
                    log.warning(
                        "event batch failed; applying its events one by one",
                        extra={"consumer": self.name, "count": len(chunk), "error_class": type(exc).__name__},
                    )
                else:
                    for applied in done:
                        EVENTS_CONSUMED.labels(self.name, "applied" if applied else "duplicate").inc()
                    continue
            for event in chunk:
                await self._handle(event)

    async def _handle(self, event: Envelope) -> None:
        for attempt in range(1, self.max_attempts + 1):
            try:
                done = await self.apply(event)
                EVENTS_CONSUMED.labels(self.name, "applied" if done else "duplicate").inc()
                return
            except asyncio.CancelledError:
                raise
            except EventRejected as why:
                # A poison event that passed the envelope's check (its handler found it unusable): the same
                # rule as for one refused on arrival — recorded as rejected with its reason, counted, not retried.
                await self._record(event, status=f"rejected:{why.reason}")
                EVENTS_REJECTED.labels(why.reason).inc()
                EVENTS_CONSUMED.labels(self.name, "rejected").inc()
                log.warning(
                    f"event rejected: {why.reason}",
                    extra={"consumer": self.name, "event_id": str(event.id), "event_type": event.type},
                )
                return
            except Exception as exc:
                if _is_outage(exc):
                    raise  # the database is away: recreate the consumer, the event comes again
                log.warning(
                    "event handler failed",
                    extra={"consumer": self.name, "event_id": str(event.id), "event_type": event.type,
                           "attempt": attempt, "error_class": type(exc).__name__},
                )
                if attempt < self.max_attempts:
                    await asyncio.sleep(_backoff(attempt))
        await self._record(event, status="failed")
        EVENTS_CONSUMED.labels(self.name, "failed").inc()

    async def apply(self, event: Envelope) -> bool:
        """Apply one event once; returns False when it was already applied."""
        return (await self.apply_batch([event]))[0]

    async def apply_batch(self, events: Sequence[Envelope]) -> list[bool]:
        """Apply events in order in one transaction, each once; per event, False when it was already applied.

        All or nothing: if any handler fails, nothing of the batch stays (the caller may retry one by one).
        """
        async with self.sessions() as session, session.begin():
            session.info[_DEFERRED] = {}  # the batch's outbox rows (and the like) go in at its end
            fresh = set(
                (
                    await session.execute(
                        _INBOX_INSERT,
                        {
                            "consumer": self.name,
                            "ids": [event.id for event in events],
                            "types": [event.type for event in events],
                        },
                    )
                ).scalars()
            )
            done: list[bool] = []
            for event in events:
                done.append(event.id in fresh)
                fresh.discard(event.id)  # the same event twice in one batch: the repeat is a duplicate
            to_apply = [event for event, applied in zip(events, done, strict=True) if applied]
            prepare: BatchPreparer | None = getattr(self.handler, "prepare_batch", None)
            if prepare is not None and len(to_apply) > 1:
                await prepare(session, to_apply)
            tracing = observability.tracing_enabled()
            for event in to_apply:
                with (
                    observability.span(
                        f"{self.name} process", kind="CONSUMER", parent=event.traceparent,
                        **{"messaging.system": "kafka", "messaging.consumer.group.name": self.group_id,
                           "mkr.event.type": event.type, "mkr.event.id": str(event.id)},
                    ) if tracing else contextlib.nullcontext()
                ):  # fmt: skip
                    await self.handler(session, event)
                if len(events) > 1:
                    # The next event starts from the database, as in a transaction of its own.
                    await session.flush()
                    session.expunge_all()
            await flush_deferred(session)
            return done

    async def _record(self, event: Envelope, *, status: str) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                pg_insert(processed_events_table)
                .values(consumer=self.name, event_id=event.id, event_type=event.type, status=status)
                .on_conflict_do_nothing()
            )


def _claimed_type(record: ConsumerRecord[bytes, bytes]) -> str | None:
    """The `type` a rejected record claims, if it is readable at all (only ever logged if it is a known one)."""
    import json

    try:
        value = json.loads(record.value or b"")
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested beyond the parser's depth
        return None
    claimed = value.get("type") if isinstance(value, dict) else None
    return claimed if isinstance(claimed, str) else None


def _is_outage(exc: BaseException) -> bool:
    if isinstance(exc, OSError | TimeoutError | sa.exc.OperationalError | sa.exc.InterfaceError):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)


async def broker_reachable(settings: Settings, timeout: float = 3.0) -> bool:
    """True when the broker answers a metadata request."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=int(timeout * 1000), **client_options(settings)
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout=timeout)
        return True
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), timeout=timeout)


__all__ = [
    "ALL_TOPICS",
    "INTAKE_TOPIC",
    "NOTIFICATIONS_TOPIC",
    "REFERRAL_TOPIC",
    "SHELTER_TOPIC",
    "Envelope",
    "EventConsumer",
    "OutboxRelay",
    "broker_reachable",
    "create_event_tables",
    "emit",
    "ensure_topics",
    "event_of",
    "flush_deferred",
    "insert_rows",
    "make_event",
    "publish",
    "publish_events",
    "publish_many",
]
