"""One trace per report: intake's request → the outbox → Kafka → referral → notifications → webhook and e-mail.

The four services run in this process with an in-memory span exporter; a report at intake must yield
one trace id across every hop, and no span may carry anything of the survivor.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from services.notifications.config import NotificationsConfig
from shared import observability
from shared.embedded import free_port
from shared.events import Envelope
from shared.settings import Settings
from tests.conftest import drop_databases
from tests.support import Stack, contract_report, new_municipality, running_stack, wait_for

PRIVATE = ("Ermira", "Hoxha", "+355690000000", "Rruga e Testit", "invented narrative", "1991-04-02")


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content)
        message["X-Rcpt-To"] = ",".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"


class _Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:]) if k}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append((headers, body))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()


@pytest.fixture
def exporter() -> Iterator[Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    observability.use_tracer_provider(provider)
    try:
        yield memory
    finally:
        observability.use_tracer_provider(None)
        provider.shutdown()


@pytest.fixture
async def traced(settings: Settings, exporter: Any) -> AsyncIterator[tuple[Stack, _Mailbox, _Receiver]]:
    """All four services on databases and topics of their own, started with tracing on."""
    box = _Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    receiver = _Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    run = uuid.uuid4().hex[:8]
    private = settings.model_copy(update={"database_prefix": f"mkrt_{run}_", "kafka_topic_prefix": f"t{run}."})
    config = NotificationsConfig(
        delivery_poll_seconds=0.2, smtp_host="127.0.0.1", smtp_port=controller.port, smtp_from="mkr@test.invalid",
    )
    try:
        async with running_stack(private, options={"notifications": {"config": config}}) as stack:
            yield stack, box, receiver
    finally:
        server.close()
        controller.stop()
        await drop_databases(private)


@pytest.mark.timeout(240)
async def test_one_trace_from_report_to_webhook_and_email_without_personal_data(
    traced: tuple[Stack, _Mailbox, _Receiver], exporter: Any
) -> None:
    stack, mailbox, receiver = traced
    town = new_municipality()
    address = f"social-{town}@example.org"
    member = await stack.referral.post(
        "/v1/members",
        json={"name": "Sherbimi Social", "kind": "social_services", "municipality": town,
              "services": ["social_services"], "contact": {"email": address, "phone": "+355 4 000 000"}},
        headers=stack.auth("admin", town),
    )
    assert member.status_code == 201, member.text
    coordinator = stack.auth("coordinator", town)
    subscribed = await stack.notifications.post(
        "/v1/subscriptions", headers=coordinator,
        json={"url": f"http://127.0.0.1:{receiver.port}/hook", "event_types": ["referral.created"],
              "secret": "s3cret-for-tests-0123456789"},
    )
    assert subscribed.status_code == 201, subscribed.text

    # The member's contact reaches notifications first (its own trace), then the report.
    async def contact_known() -> bool:
        # Consumers are up once the member.saved event was applied (a referral to the member needs it).
        spans = exporter.get_finished_spans()
        return any(s.attributes.get("mkr.event.type") == "member.saved" and s.name.startswith("notifications.")
                   for s in spans)

    await wait_for(contact_known, timeout=60, what="notifications to learn the member's e-mail")
    exporter.clear()

    created = await stack.intake.post(
        "/v1/cases", json=contract_report(town), headers=stack.auth("police", town, member_id="p-1"),
        params={"q": "Ermira"},  # a query string must never reach a span
    )
    assert created.status_code == 201, created.text

    async def delivered() -> bool:
        return bool(receiver.requests) and any(m["X-Rcpt-To"] == address for m in mailbox.messages)

    await wait_for(delivered, timeout=60, what="the webhook and the e-mail")

    def finished_both() -> bool:
        names = {s.name for s in exporter.get_finished_spans()}
        return {"webhook deliver", "email deliver"} <= names

    await wait_for(_async(finished_both), timeout=10, what="the delivery spans")

    spans = exporter.get_finished_spans()
    [root] = [s for s in spans if s.name == "POST /v1/cases"]
    trace_id = root.context.trace_id
    ours = [s for s in spans if s.context.trace_id == trace_id]
    names = {s.name for s in ours}
    assert root.parent is None
    assert root.attributes["http.route"] == "/v1/cases" and root.attributes["http.response.status_code"] == 201
    topic = stack.settings.topic
    assert {
        f"{topic('mkr.intake.events')} publish",
        f"{topic('mkr.referral.events')} publish",
        "webhook deliver",
        "email deliver",
    } <= names, names
    consumers = {s.name for s in ours if s.kind.name == "CONSUMER"}
    assert any(n.startswith("referral.") for n in consumers), consumers
    assert any(n.startswith("notifications.") for n in consumers), consumers
    # Every delivery of this report is in the report's trace: none started a trace of its own.
    deliveries = [s for s in spans if s.name.endswith(" deliver")]
    assert deliveries and all(s.context.trace_id == trace_id for s in deliveries)
    assert all(s.attributes.get("mkr.delivery.outcome") == "succeeded" for s in deliveries)
    # The webhook carried the trace on: the header and the CloudEvents attribute.
    headers, body = receiver.requests[0]
    assert int(headers["traceparent"].split("-")[1], 16) == trace_id
    assert int(json.loads(body)["traceparent"].split("-")[1], 16) == trace_id

    for s in ours:
        texts = [s.name, *(str(v) for v in (s.attributes or {}).values()), *(str(k) for k in s.attributes or {})]
        texts += [str(v) for e in s.events for v in (e.attributes or {}).values()]
        for text in texts:
            assert not any(p in text for p in PRIVATE), (s.name, text)
            assert "?" not in text and "q=" not in text, (s.name, text)


def _async(check: Any) -> Any:
    async def probe() -> Any:
        return check()

    return probe


def test_tracing_is_off_unless_otel_variables_ask_for_it() -> None:
    assert not observability.tracing_requested({})
    assert not observability.tracing_requested({"OTEL_SERVICE_NAME": "x"})
    assert observability.tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert observability.tracing_requested({"OTEL_TRACES_EXPORTER": "otlp"})
    assert not observability.tracing_requested({"OTEL_TRACES_EXPORTER": "none",
                                                 "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert not observability.tracing_requested({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"})
    # Off: no trace context anywhere, and the envelope keeps its contract shape.
    assert observability.current_traceparent() is None
    assert observability.trace_payload() == ""
    with observability.span("x") as nothing:
        assert nothing is None
    event = Envelope(type="case.reported", source="mkr/intake", subject="s", municipality="m")
    assert "traceparent" not in json.loads(event.model_dump_json())
