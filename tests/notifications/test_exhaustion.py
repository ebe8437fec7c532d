"""Webhooks and streams that no stranger, receiver or user can stall or exhaust (issue #11).

Receivers here are real loopback HTTP servers that misbehave: one never answers, one trickles bytes
for ever, one answers 10 MB. Streams are read over a real uvicorn server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.notifications import domain
from services.notifications.models import Subscription
from tests.notifications.conftest import FastStack, Mailbox, Produce, WebhookReceiver, serve
from tests.notifications.test_alerts import case_reported, next_alert, read_sse
from tests.support import Stack, new_municipality, wait_for

SECRET = "plain-secret-for-tests-0123456789"


def case_data(**extra: Any) -> dict[str, Any]:
    return {"case_id": str(uuid.uuid4()), "case_number": "ELB-2026-00091", "risk_level": "high", **extra}


async def subscribe(
    stack: Stack, headers: dict[str, str], url: str, types: list[str], secret: str | None = SECRET
) -> httpx.Response:
    body: dict[str, Any] = {"url": url, "event_types": types}
    if secret is not None:
        body["secret"] = secret
    return await stack.notifications.post("/v1/subscriptions", headers=headers, json=body)


# --- misbehaving receivers -----------------------------------------------------------------------


@dataclass
class BadReceivers:
    """A loopback server: /hang reads the request and never answers, /trickle sends a byte every 0.1 s
    for ever, /huge answers 200 with a 10 MB body; `sent` counts what /huge managed to write."""

    port: int = 0
    seen: list[str] = field(default_factory=list)
    huge_sent: list[int] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            await reader.readexactly(int(headers.get("content-length", "0")))
            self.seen.append(path.split("/")[1])
            self.headers.append(headers)
            if path.startswith("/hang"):
                await asyncio.sleep(3600)
            elif path.startswith("/trickle"):
                writer.write(b"HTTP/1.1 200 OK\r\n")
                while True:
                    writer.write(b"X")  # a header line that never ends, a byte at a time
                    await writer.drain()
                    await asyncio.sleep(0.1)
            else:
                size = 10 * 1024 * 1024
                writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
                sent = 0
                piece = b"z" * 65536
                try:
                    while sent < size:
                        writer.write(piece)
                        await writer.drain()
                        sent += len(piece)
                finally:
                    self.huge_sent.append(sent)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def bad_receivers() -> AsyncIterator[BadReceivers]:
    receivers = BadReceivers()
    handlers: set[asyncio.Task[Any]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await receivers.handle(reader, writer)
        finally:
            handlers.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    receivers.port = server.sockets[0].getsockname()[1]
    try:
        yield receivers
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), timeout=2)


async def test_hanging_trickling_and_huge_receivers_delay_neither_other_deliveries_nor_email(
    fast: FastStack, webhook_receiver: WebhookReceiver, mailbox: Mailbox
) -> None:
    stack, town = fast.stack, new_municipality()
    coordinator = stack.auth("coordinator", town)
    deadline = fast.config.webhook_timeout_seconds
    async with bad_receivers() as bad:
        for path in ("/hang", "/trickle", "/huge"):
            created = await subscribe(stack, coordinator, bad.url(f"{path}/{town}"), ["mechanism.gap"])
            assert created.status_code == 201, created.text
        good_path = f"/good/{town}"
        good = await subscribe(stack, stack.auth("coordinator", town), webhook_receiver.url(good_path), ["case.closed"])
        assert good.status_code == 201
        # Several events each, so that the stalling receivers are busy with many attempts at once.
        for n in range(4):
            await fast.produce(
                "referral", "mechanism.gap", town,
                {"case_id": str(uuid.uuid4()), "case_number": f"ELB-2026-{n:05d}", "missing_kind": "legal_aid"},
            )

        async def stalled() -> bool:
            return {"hang", "trickle", "huge"} <= set(bad.seen)

        await wait_for(stalled, timeout=20, what="the three bad receivers to be called")

        # Now, while they stall: another subscriber's event and an e-mail alert must still arrive at once.
        member = str(uuid.uuid4())
        address = f"contact-{town}@police.test.invalid"
        await fast.produce(
            "referral", "member.saved", town,
            {"member_id": member, "name": "Policia Test", "kind": "police", "services": [], "email": address},
            key=member,
        )
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await fast.produce("intake", "case.closed", town, case_data())
        await fast.produce(
            "referral", "referral.sla_breached", town,
            {"referral_id": str(uuid.uuid4()), "case_id": str(uuid.uuid4()), "case_number": "ELB-2026-00092",
             "to_member_id": member, "to_member_kind": "police", "urgency": "high",
             "ack_due_at": datetime.now(UTC).isoformat()},
            key=member,
        )
        await wait_for(lambda: _async(webhook_receiver.at(good_path)), timeout=10, what="the good webhook")
        await wait_for(
            lambda: _async([m for m in mailbox.messages if m["X-Rcpt-To"] == address]), timeout=10, what="the e-mail"
        )
        elapsed = time.monotonic() - started
        # Promptly: well within one attempt's deadline of the stalling receivers' hold, not after them.
        assert elapsed < 6, elapsed
        assert webhook_receiver.at(good_path)[0].headers["accept-encoding"] == "identity"

        # Each stalling attempt was cut at its deadline and recorded; the huge answer was not read to its end.
        async def cut_short() -> list[dict[str, Any]]:
            response = await stack.notifications.get("/v1/deliveries", headers=coordinator, params={"limit": 200})
            rows = [d for d in response.json()["items"] if d["event_type"] == "mechanism.gap" and d["attempts"] >= 1]
            return rows if len(rows) == 12 else []

        rows = await wait_for(cut_short, timeout=30, what="an attempt recorded for every stalled delivery")
        errors = {d["last_error"] for d in rows if d["status"] != "succeeded"}
        assert errors == {f"no answer within {deadline:g} s"}, errors
        assert len([d for d in rows if d["status"] == "succeeded"]) >= 4  # /huge answered 200
        await wait_for(lambda: _async(bad.huge_sent), timeout=10, what="the huge receiver to be cut off")
        assert max(bad.huge_sent) < 10 * 1024 * 1024
        assert all(h.get("accept-encoding") == "identity" for h in bad.headers)


async def _async(value: Any) -> Any:
    return value


async def test_webhook_attempt_reads_at_most_64_kib_of_a_10_mb_answer(fast: FastStack) -> None:
    from services.notifications.delivery import read_at_most

    limit = fast.config.webhook_max_response_bytes
    assert limit == 65536
    async with bad_receivers() as bad, httpx.AsyncClient() as client:
        async with client.stream("POST", bad.url("/huge/direct"), content=b"{}") as response:
            read = await read_at_most(response, limit)
        await wait_for(lambda: _async(bad.huge_sent), timeout=10, what="the receiver to be cut off")
    assert limit <= read < 2 * limit
    assert bad.huge_sent[0] < 10 * 1024 * 1024


# --- Standard Webhooks, generated and sealed secrets ---------------------------------------------


async def test_standard_webhooks_signature_verifies_with_the_standardwebhooks_library(
    fast: FastStack, webhook_receiver: WebhookReceiver
) -> None:
    stack, town = fast.stack, new_municipality()
    generated = await subscribe(
        stack, stack.auth("coordinator", town), webhook_receiver.url(f"/sw/gen/{town}"), ["case.closed"], secret=None
    )
    plain = await subscribe(
        stack, stack.auth("coordinator", town), webhook_receiver.url(f"/sw/plain/{town}"), ["case.closed"]
    )
    assert generated.status_code == 201 and plain.status_code == 201
    whsec = generated.json()["secret"]
    assert whsec.startswith("whsec_") and len(base64.b64decode(whsec.removeprefix("whsec_"))) == 32
    event = await fast.produce("intake", "case.closed", town, case_data())
    for path, secret in ((f"/sw/gen/{town}", whsec), (f"/sw/plain/{town}", SECRET.encode())):
        [received] = await wait_for(lambda p=path: _async(webhook_receiver.at(p)), timeout=20, what=path)
        assert received.headers["webhook-id"] == event["id"] == received.headers["x-mkr-event-id"]
        assert abs(int(received.headers["webhook-timestamp"]) - time.time()) < 60
        assert received.headers["webhook-signature"].startswith("v1,")
        verified = Webhook(secret).verify(received.body, received.headers)  # raises if the signature is wrong
        assert verified["id"] == event["id"]
        with pytest.raises(WebhookVerificationError):
            Webhook(b"another key entirely").verify(received.body, received.headers)
    # The legacy header keeps its meaning: HMAC of the raw body with the secret's UTF-8 bytes.
    received = webhook_receiver.at(f"/sw/gen/{town}")[0]
    assert received.headers["x-mkr-signature"] == domain.signature(whsec, received.body)


async def test_generated_whsec_secret_is_returned_once_and_sealed_at_rest(
    fast: FastStack, webhook_receiver: WebhookReceiver
) -> None:
    stack, town = fast.stack, new_municipality()
    coordinator = stack.auth("coordinator", town)
    created = await subscribe(stack, coordinator, webhook_receiver.url(f"/sealed/{town}"), ["case.closed"], secret=None)
    given = await subscribe(stack, coordinator, webhook_receiver.url(f"/sealed2/{town}"), ["case.closed"])
    assert created.status_code == 201 and given.status_code == 201
    listed = (await stack.notifications.get("/v1/subscriptions", headers=coordinator)).json()["items"]
    assert len(listed) == 2 and all("secret" not in s for s in listed)
    runtime = stack.apps["notifications"].state.runtime
    async with runtime.sessions() as session:
        rows = (await session.execute(sa.text("SELECT id, secret::text FROM subscriptions WHERE municipality = :m"),
                                      {"m": town})).all()
    stored = {str(r[0]): r[1] for r in rows}
    for answer, secret in ((created.json(), created.json()["secret"]), (given.json(), SECRET)):
        assert secret not in stored[answer["id"]]
        assert secret.removeprefix("whsec_") not in stored[answer["id"]]


async def test_secret_stored_in_the_clear_before_sealing_is_sealed_and_still_signs(
    fast: FastStack, webhook_receiver: WebhookReceiver
) -> None:
    from services.notifications.delivery import seal_legacy_secrets

    stack, town = fast.stack, new_municipality()
    runtime = stack.apps["notifications"].state.runtime
    legacy = Subscription(
        municipality=town, owner_role="coordinator", owner_sub="c", url=webhook_receiver.url(f"/legacy/{town}"),
        event_types=["case.closed"], secret=SECRET, secret_sealed=False,
    )
    async with runtime.sessions() as session, session.begin():
        session.add(legacy)
    assert await seal_legacy_secrets(runtime) >= 1
    async with runtime.sessions() as session:
        stored = await session.scalar(sa.text("SELECT secret FROM subscriptions WHERE id = :i"), {"i": legacy.id})
    assert SECRET not in str(stored)
    await fast.produce("intake", "case.closed", town, case_data())
    [received] = await wait_for(lambda: _async(webhook_receiver.at(f"/legacy/{town}")), timeout=20, what="legacy")
    assert received.headers["x-mkr-signature"] == domain.signature(SECRET, received.body)


async def test_owner_beyond_max_subscriptions_is_409_even_when_racing(
    fast: FastStack, webhook_receiver: WebhookReceiver
) -> None:
    stack, town = fast.stack, new_municipality()
    cap = fast.config.max_subscriptions
    member = str(uuid.uuid4())
    police = stack.auth("police", town, member_id=member)
    url = webhook_receiver.url(f"/cap/{town}")
    for _ in range(cap - 2):
        assert (await subscribe(stack, police, url, ["referral.created"])).status_code == 201
    racing = await asyncio.gather(*(subscribe(stack, police, url, ["referral.created"]) for _ in range(5)))
    assert sorted(r.status_code for r in racing) == [201, 201, 409, 409, 409]
    refused = next(r for r in racing if r.status_code == 409)
    assert refused.headers["content-type"].startswith("application/problem+json")
    listed = (await stack.notifications.get("/v1/subscriptions", headers=police, params={"limit": 200})).json()["items"]
    assert len(listed) == cap
    # Another institution of the same town, and the town's coordinator, are owners of their own.
    other = stack.auth("police", town, member_id=str(uuid.uuid4()))
    assert (await subscribe(stack, other, url, ["referral.created"])).status_code == 201
    assert (await subscribe(stack, stack.auth("coordinator", town), url, ["case.closed"])).status_code == 201
    # A deleted one frees its place.
    gone = listed[0]["id"]
    assert (await stack.notifications.delete(f"/v1/subscriptions/{gone}", headers=police)).status_code == 204
    assert (await subscribe(stack, police, url, ["referral.created"])).status_code == 201
    assert (await subscribe(stack, police, url, ["referral.created"])).status_code == 409


async def test_subscription_and_delivery_lists_are_bounded_by_limit(
    fast: FastStack, webhook_receiver: WebhookReceiver
) -> None:
    stack, town = fast.stack, new_municipality()
    coordinator = stack.auth("coordinator", town)
    for n in range(3):
        await subscribe(stack, coordinator, webhook_receiver.url(f"/lim/{n}/{town}"), ["case.closed"])
    first = (await stack.notifications.get("/v1/subscriptions", headers=coordinator, params={"limit": 2})).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    for params in ({"limit": 0}, {"limit": 201}):
        for path in ("/v1/subscriptions", "/v1/deliveries", "/v1/inbox"):
            response = await stack.notifications.get(path, headers=coordinator, params=params)
            assert response.status_code == 422, (path, params)


# --- addresses -----------------------------------------------------------------------------------

# Teredo client addresses are stored inverted: ~169.254.169.254 = 0x56015601, ~10.0.0.1 = 0xf5fffffe.
TEREDO_METADATA = "2001:0:4136:e378:8000:63bf:5601:5601"
TEREDO_PRIVATE = "2001:0:4136:e378:8000:63bf:f5ff:fffe"


@pytest.mark.parametrize(
    ("address", "environment"),
    [
        ("2002:a9fe:a9fe::1", "test"),  # 6to4 around 169.254.169.254
        ("2002:a00:1::1", "production"),  # 6to4 around 10.0.0.1
        (TEREDO_METADATA, "development"),
        (TEREDO_PRIVATE, "production"),
        ("::ffff:169.254.169.254", "test"),
        ("::ffff:127.0.0.1", "production"),
        ("64:ff9b::a9fe:a9fe", "test"),  # NAT64 around the metadata address
        ("169.254.169.254", "development"),
        ("fd00:ec2::254", "test"),
        ("100.100.100.200", "development"),
        ("168.63.129.16", "test"),
        ("168.63.129.16", "production"),
    ],
)
def test_wrapped_internal_and_cloud_metadata_addresses_are_refused(address: str, environment: str) -> None:
    with pytest.raises(domain.UnsafeUrl) as refused:
        domain.check_address(address, environment=environment, allow_listed=False)
    assert str(refused.value) == domain.REFUSED_ADDRESS


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "100.100.100.200", TEREDO_METADATA])
def test_cloud_metadata_is_refused_even_for_an_allow_listed_host(address: str) -> None:
    for environment in ("development", "test", "production"):
        with pytest.raises(domain.UnsafeUrl):
            domain.check_address(address, environment=environment, allow_listed=True)


def test_public_addresses_in_wrappers_stay_allowed() -> None:
    for address in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:93.184.216.34"):
        domain.check_address(address, environment="production", allow_listed=False)


async def test_refused_webhook_addresses_all_answer_the_same_generic_message(
    fast: FastStack, webhook_receiver: WebhookReceiver
) -> None:
    stack, town = fast.stack, new_municipality()
    coordinator = stack.auth("coordinator", town)
    details = set()
    for url in (
        "http://169.254.169.254/latest/meta-data",
        "http://[2002:a9fe:a9fe::1]/x",
        f"http://[{TEREDO_METADATA}]/x",
        "http://[fd00:ec2::254]/x",
        "http://100.100.100.200/x",
        "http://no-such-host.invalid/x",  # does not resolve: told in the same words
        "http://db.internal.invalid/x",
    ):
        response = await subscribe(stack, coordinator, url, ["case.closed"])
        assert response.status_code == 422, (url, response.text)
        details.add((response.json()["detail"], json.dumps(response.json()["errors"])))
    assert len(details) == 1, details
    assert (await subscribe(stack, coordinator, webhook_receiver.url("/fine"), ["case.closed"])).status_code == 201


# --- streams -------------------------------------------------------------------------------------


async def test_sixth_stream_of_one_user_is_429_until_one_closes(ready: Stack) -> None:
    stack = ready
    town = new_municipality()
    sub = f"user-{uuid.uuid4().hex[:8]}"
    headers = stack.auth("coordinator", town, sub=sub)
    limit = stack.apps["notifications"].state.notifications_config.max_streams
    async with serve(stack.apps["notifications"]) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        async with contextlib.AsyncExitStack() as streams:
            opened = [
                await streams.enter_async_context(client.stream("GET", "/v1/inbox/stream", headers=headers))
                for _ in range(limit)
            ]
            assert all(r.status_code == 200 for r in opened)
            # Another token of the same user: still the same `sub`, still refused.
            refused = await client.get("/v1/inbox/stream", headers=stack.auth("coordinator", town, sub=sub))
            assert refused.status_code == 429
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.json()["status"] == 429
            # Another user is not affected.
            async with client.stream(
                "GET", "/v1/inbox/stream", headers=stack.auth("coordinator", town)
            ) as other:
                assert other.status_code == 200
            await opened[0].aclose()

            async def freed() -> bool:
                return stack.apps["notifications"].state.broadcaster.open_streams(sub) < limit

            await wait_for(freed, timeout=5, what="the closed stream to free its place")
            async with client.stream("GET", "/v1/inbox/stream", headers=headers) as again:
                assert again.status_code == 200


async def test_stream_ends_when_its_token_expires(ready: Stack) -> None:
    stack = ready
    town = new_municipality()
    headers = {"Authorization": f"Bearer {_token(stack, town, ttl=3)}"}
    started = time.monotonic()
    frames: list[dict[str, str]] = []
    async with serve(stack.apps["notifications"]) as base, httpx.AsyncClient(base_url=base, timeout=20) as client:
        async with client.stream("GET", "/v1/inbox/stream", headers=headers) as response:
            assert response.status_code == 200
            queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
            await asyncio.wait_for(read_sse(response, queue), timeout=12)  # returns when the server ends it
            while not queue.empty():
                frames.append(queue.get_nowait())
    elapsed = time.monotonic() - started
    assert 2 <= elapsed < 8, elapsed
    assert frames[-1].get("event") == "expired"


def _token(stack: Stack, town: str, *, ttl: int) -> str:
    from shared.keys import issue_token

    return issue_token(stack.settings, role="coordinator", municipality=town, ttl=ttl)


async def test_new_alert_wakes_only_the_streams_it_concerns(
    ready: Stack, produce: Produce, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = ready
    town, elsewhere = new_municipality(), new_municipality()
    broadcaster = stack.apps["notifications"].state.broadcaster
    # A catch-up (the notifier's LISTEN reconnecting, a NOTIFY naming no addressee) wakes every stream by
    # design: a window with one in it says nothing about the alert's own NOTIFY, so it is measured again.
    catch_ups: list[int] = []
    wake_all = broadcaster.wake_all

    def counted_wake_all() -> None:
        catch_ups.append(1)
        wake_all()

    monkeypatch.setattr(broadcaster, "wake_all", counted_wake_all)
    async with serve(stack.apps["notifications"]) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        async with (
            client.stream("GET", "/v1/inbox/stream", headers=stack.auth("coordinator", town)) as mine,
            client.stream("GET", "/v1/inbox/stream", headers=stack.auth("coordinator", elsewhere)) as other_town,
            client.stream("GET", "/v1/inbox/stream", headers=stack.auth("police", town)) as other_role,
        ):
            queues = {name: asyncio.Queue[dict[str, str]]() for name in ("mine", "town", "role")}
            readers = [
                asyncio.create_task(read_sse(r, queues[n]))
                for n, r in (("mine", mine), ("town", other_town), ("role", other_role))
            ]
            try:
                for queue in queues.values():
                    assert (await asyncio.wait_for(queue.get(), timeout=30)).get("comment") == "connected"
                listeners = {(ls.municipality, ls.role): ls for ls in broadcaster.listeners()}
                for _ in range(3):
                    before = {key: ls.wakes for key, ls in listeners.items()}
                    catch_ups_before = len(catch_ups)
                    data = case_reported("high")
                    await produce("intake", "case.reported", town, data)
                    frame = await next_alert(queues["mine"], timeout=60)  # consumer, insert, NOTIFY: loaded, slow
                    assert json.loads(frame["data"])["case_id"] == data["case_id"]
                    await asyncio.sleep(0.5)  # room for a wrong wake to show
                    woken = {key: ls.wakes - before[key] for key, ls in listeners.items()}
                    if len(catch_ups) == catch_ups_before:
                        break
            finally:
                for reader in readers:
                    reader.cancel()
    assert woken[(town, "coordinator")] >= 1
    assert woken[(elsewhere, "coordinator")] == 0
    assert woken[(town, "police")] == 0
