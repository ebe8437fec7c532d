"""A service's consumer as one registry `{event model: handler}`: handlers receive validated, typed events.

    handlers = EventHandlers({CaseReported: on_case_reported, CaseClosed: on_case_closed})
    ConsumerSpec("cases", handlers.topics, handlers)

    async def on_case_reported(session: AsyncSession, event: Received[CaseReported]) -> None:
        event.data.case_id  # a UUID, validated against shared/contracts before the handler runs

The consumer (`shared.events.EventConsumer`) has already checked the envelope against the contract
and rejected what fails it (recorded, counted, never retried). A contract event the registry has no
handler for (and no `every`) is acknowledged and changes nothing: it is not even recorded in the inbox.
A handler that finds an event unusable raises `EventRejected(reason)`: the same rule applies (recorded as
rejected, counted, not retried).
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from shared.contracts import EventData, EventRejected
from shared.events import BatchPreparer, Envelope

D = TypeVar("D", bound=EventData)


@dataclass(frozen=True)
class Received(Generic[D]):
    """An event as a handler receives it: the envelope's attributes and its data as the contract's model."""

    envelope: Envelope
    data: D

    @property
    def id(self) -> uuid.UUID:
        return self.envelope.id

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def municipality(self) -> str:
        return self.envelope.municipality

    @property
    def subject(self) -> str:
        return self.envelope.subject

    @property
    def time(self) -> datetime:
        return self.envelope.time


TypedHandler = Callable[[AsyncSession, Received[Any]], Awaitable[None]]


class EventHandlers:
    """The registry of one consumer: which event models it acts on and the handler of each.

    `every`, if given, runs after the typed handler for every contract event the consumer reads
    (notifications: alert rules and webhooks are data, matched by event type).
    `prepare`, if given, is the consumer's `prepare_batch` (shared/events.py): once per batch, before the
    handlers, with the batch's events to apply (referral: the new cases of a batch in one upsert).
    """

    def __init__(
        self,
        handlers: Mapping[type[EventData], TypedHandler],
        *,
        every: TypedHandler | None = None,
        topics: tuple[str, ...] = (),
        prepare: BatchPreparer | None = None,
    ) -> None:
        self._by_type: dict[str, tuple[type[EventData], TypedHandler]] = {}
        for model, handler in handlers.items():
            if model.__dict__.get("TYPE") is None:
                raise TypeError(f"{model.__name__} is not an event type of shared/contracts (EVENT_TYPES)")
            self._by_type[model.TYPE] = (model, handler)
        self.every = every
        self.prepare = prepare
        # The topics to read: those of the handled models, and any the caller adds (for `every`).
        self.topics: tuple[str, ...] = tuple(dict.fromkeys([*(m.TOPIC for m, _ in self._by_type.values()), *topics]))

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self._by_type)

    def acts_on(self, event_type: str) -> bool:
        """Whether applying an event of this type can change anything here: a handler for it, or `every`. The
        consumer acknowledges the others without a transaction (no inbox row: there is nothing to apply twice)."""
        return self.every is not None or event_type in self._by_type

    async def prepare_batch(self, session: AsyncSession, envelopes: Sequence[Envelope]) -> None:
        if self.prepare is not None:
            await self.prepare(session, envelopes)

    async def __call__(self, session: AsyncSession, envelope: Envelope) -> None:
        entry = self._by_type.get(envelope.type)
        if entry is None and self.every is None:
            return  # a contract event this consumer does not act on
        data = envelope.typed()
        if entry is not None:
            model, handler = entry
            if not isinstance(data, model):
                raise EventRejected("invalid_data")
            await handler(session, Received(envelope, data))
        if self.every is not None:
            await self.every(session, Received(envelope, data))


def events_alone(envelopes: Sequence[Envelope], model: type[D]) -> list[Received[D]]:
    """The events of `model` in a batch about to be applied whose case no other event of the batch names (its
    subject, its data's top-level strings and lists of strings): what a `prepare_batch` may apply ahead of the
    batch's order, all at once. A case another event names (a second report, a closure, a transfer...) is left
    to its handler, in order; an unusable event too (its handler rejects it, one by one)."""
    named: Counter[str] = Counter()
    for envelope in envelopes:
        named.update(_named(envelope))
    alone = []
    for envelope in envelopes:
        if envelope.type != model.TYPE:
            continue
        with contextlib.suppress(EventRejected):
            data = envelope.typed()
            if isinstance(data, model) and named[str(getattr(data, "case_id", envelope.subject)).lower()] == 1:
                alone.append(Received(envelope, data))
    return alone


def _named(envelope: Envelope) -> set[str]:
    """The ids an event names (its subject, its data's top-level strings and lists of strings), lower-cased."""
    found = {envelope.subject.lower()}
    for value in envelope.data.values():
        if isinstance(value, str):
            found.add(value.lower())
        elif isinstance(value, list):
            found.update(item.lower() for item in value if isinstance(item, str))
    return found


__all__ = ["EventHandlers", "Received", "TypedHandler", "events_alone"]
