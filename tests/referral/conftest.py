"""Fixtures of the referral tests: a producer standing in for intake and shelter on the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer

from shared.events import ensure_topics, producer_for
from tests.referral.helpers import produce, reported, routing_of
from tests.support import Stack, new_municipality


@pytest.fixture(scope="session")
async def producer(stack: Stack) -> AsyncIterator[AIOKafkaProducer]:
    """A producer on the session's topics, returned once referral's consumer has joined its group
    (a first case was routed), so timings measured by tests are the steady state, not the start-up."""
    await ensure_topics(stack.settings)
    producer = producer_for(stack.settings)
    await asyncio.wait_for(producer.start(), timeout=15)
    municipality = new_municipality()
    data = reported(municipality)
    await produce(producer, stack.settings, "case.reported", municipality, data)
    await routing_of(stack, municipality, data["case_id"], timeout=60)
    yield producer
    await asyncio.wait_for(producer.stop(), timeout=10)
