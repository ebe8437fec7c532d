"""Fixtures of the notifications tests: events onto the real broker, a webhook receiver and an
SMTP server on loopback, the app under a real HTTP server, and a private fast-retrying stack."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from aiosmtpd.controller import Controller
from fastapi import FastAPI

from services.notifications.config import NotificationsConfig
from shared.embedded import free_port
from shared.settings import Settings
from tests.conftest import drop_databases
from tests.support import Stack, running_stack, wait_for

Produce = Callable[..., Awaitable[dict[str, Any]]]
TOPIC_OF = {"intake": "mkr.intake.events", "referral": "mkr.referral.events", "shelter": "mkr.shelter.events"}


def envelope(
    type_: str, municipality: str, data: dict[str, Any], *, source: str, event_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": event_id or str(uuid.uuid4()),
        "type": type_,
        "source": source,
        "time": datetime.now(UTC).isoformat(),
        "subject": str(data.get("case_id") or data.get("shelter_id") or data.get("member_id") or municipality),
        "municipality": municipality,
        "schema_version": 1,
        "data": data,
    }


def producer_for_settings(producer: AIOKafkaProducer, settings: Settings) -> Produce:
    async def produce(
        service: str,
        type_: str,
        municipality: str,
        data: dict[str, Any],
        *,
        event_id: str | None = None,
        key: str | None = None,
    ) -> dict[str, Any]:
        event = envelope(type_, municipality, data, source=f"mkr/{service}", event_id=event_id)
        key = key or str(data.get("case_id") or data.get("shelter_id") or municipality)
        await producer.send_and_wait(
            settings.topic(TOPIC_OF[service]), value=json.dumps(event).encode(), key=key.encode()
        )
        return event

    return produce


@pytest.fixture(scope="session")
async def kafka_producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=0)
    await producer.start()
    yield producer
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.stop(), timeout=10)


@pytest.fixture(scope="session")
def produce(settings: Settings, kafka_producer: AIOKafkaProducer) -> Produce:
    """Publish an envelope as another service would, onto the session stack's topics."""
    return producer_for_settings(kafka_producer, settings)


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Serve an already started app over loopback HTTP (ASGITransport buffers streaming bodies)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", timeout_graceful_shutdown=1
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, timeout=5)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """A minimal HTTP/1.1 server on loopback: records each POST, answers the planned statuses."""

    port: int = 0
    requests: list[Received] = field(default_factory=list)
    # path -> statuses to answer in turn (then 200); "forever:<code>" answers it always.
    plans: dict[str, list[int]] = field(default_factory=dict)
    always: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            _, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Received(path, headers, body))
            if path in self.always:
                status = self.always[path]
            else:
                plan = self.plans.get(path) or []
                status = plan.pop(0) if plan else 200
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@pytest.fixture(scope="session")
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    yield receiver
    server.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.wait_closed(), timeout=2)


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content)
        message["X-Rcpt-To"] = ",".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"


@pytest.fixture(scope="session")
def mailbox() -> Any:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.port = controller.port  # type: ignore[attr-defined]
    yield box
    controller.stop()


@dataclass
class FastStack:
    stack: Stack
    settings: Settings
    produce: Produce
    config: NotificationsConfig


MAX_ATTEMPTS = 4


@pytest.fixture(scope="session")
async def fast(settings: Settings, kafka_producer: AIOKafkaProducer, mailbox: Any) -> AsyncIterator[FastStack]:
    """A private notifications service (own database and topics) with short back-off and SMTP on."""
    run = uuid.uuid4().hex[:8]
    private = settings.model_copy(update={"database_prefix": f"mkrt_{run}_", "kafka_topic_prefix": f"t{run}."})
    config = NotificationsConfig(
        delivery_poll_seconds=0.2,
        delivery_backoff_base_seconds=0.1,
        delivery_backoff_cap_seconds=0.4,
        delivery_max_attempts=MAX_ATTEMPTS,
        delivery_lease_seconds=10,
        webhook_timeout_seconds=2,
        smtp_host="127.0.0.1",
        smtp_port=mailbox.port,
        smtp_from="mkr@test.invalid",
        scan_seconds=0.3,
    )
    async with running_stack(private, ("notifications",), {"notifications": {"config": config}}) as stack:
        yield FastStack(stack, private, producer_for_settings(kafka_producer, private), config)
    await drop_databases(private)


async def consumer_ready(stack: Stack, produce: Produce) -> None:
    """A first event through the consumer (its group join takes a few seconds on a fresh broker)."""
    town = f"warm{uuid.uuid4().hex[:8]}"
    case_id = str(uuid.uuid4())
    await produce("intake", "case.reported", town, {"case_id": case_id, "case_number": "W-1", "risk_level": "low"})
    headers = stack.auth("coordinator", town)

    async def arrived() -> bool:
        response = await stack.notifications.get("/v1/inbox", headers=headers)
        return any(a["case_id"] == case_id for a in response.json()["items"])

    await wait_for(arrived, timeout=45, what="the notifications consumer to start")


@pytest.fixture(scope="session")
async def ready(stack: Stack, produce: Produce) -> Stack:
    """The session stack, its notifications consumer proven live."""
    await consumer_ready(stack, produce)
    return stack
