"""Getting notifications out: the database listener, webhook and e-mail delivery with retries.

Delivery rows are claimed by leasing them (`next_attempt_at` pushed past the send) under
`FOR UPDATE SKIP LOCKED`, so replicas never send one row twice at once and a crash mid-send is
retried after the lease. Failures back off exponentially with jitter (state kept in the database,
so restarts keep the schedule); after `delivery_max_attempts` the row is dead and
`notification.failed` is published in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiosmtplib
import httpx
import sqlalchemy as sa
from prometheus_client import Counter
from sqlmodel import col

from services.notifications import domain
from services.notifications.config import NotificationsConfig
from services.notifications.events import notification_failed
from services.notifications.models import Alert, Delivery, Subscription
from shared import db, observability
from shared.app import ServiceRuntime
from shared.crypto import FieldCipher
from shared.listener import Listener as PgListener
from shared.settings import Settings

log = logging.getLogger("mkr.notifications")

HISTORY_KEPT = 20
DELIVERY_ATTEMPTS = Counter(
    "mkr_notification_delivery_attempts_total", "Webhook and e-mail delivery attempts", ["channel", "outcome"]
)


@dataclass(eq=False)
class Listener:
    """One open SSE stream: whom it shows alerts to, and the event that wakes it."""

    municipality: str
    role: str
    member_id: str | None
    shelter_id: str | None
    sub: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    wakes: int = 0  # how often an alert (or a catch-up) woke this stream

    def set(self) -> None:
        self.wakes += 1
        self.wake.set()

    def concerns(self, addressee: dict[str, Any]) -> bool:
        """The alert's addressee is one this stream shows (the rule of `access.addressed_to`)."""
        if addressee.get("m") != self.municipality:
            return False
        return (
            addressee.get("r") == self.role
            or (self.member_id is not None and addressee.get("mb") == self.member_id)
            or (self.shelter_id is not None and addressee.get("s") == self.shelter_id)
            or addressee.get("u") == self.sub
        )


class TooManyStreams(Exception):
    """The caller's `sub` already holds the most open streams this process allows."""


class Broadcaster:
    """Wakes the open SSE streams of this process that an inserted alert concerns (from NOTIFY).

    Each alert's NOTIFY names its addressee, so a new alert wakes only the streams that show it; a
    payload that names none (a catch-up after reconnecting) wakes them all. Streams are counted per
    `sub`: `open` refuses one more than `max_per_sub`.
    """

    def __init__(self) -> None:
        self._by_municipality: dict[str, set[Listener]] = {}
        self._per_sub: dict[str, int] = {}

    def open(
        self,
        *,
        municipality: str,
        role: str,
        member_id: str | None,
        shelter_id: str | None,
        sub: str,
        max_per_sub: int | None = None,
    ) -> Listener:
        if max_per_sub is not None and self._per_sub.get(sub, 0) >= max_per_sub:
            raise TooManyStreams(sub)
        listener = Listener(municipality, role, member_id, shelter_id, sub)
        self._by_municipality.setdefault(municipality, set()).add(listener)
        self._per_sub[sub] = self._per_sub.get(sub, 0) + 1
        return listener

    def close(self, listener: Listener) -> None:
        """Idempotent: a stream closed twice counts once."""
        group = self._by_municipality.get(listener.municipality)
        if group is None or listener not in group:
            return
        group.discard(listener)
        if not group:
            del self._by_municipality[listener.municipality]
        left = self._per_sub.get(listener.sub, 1) - 1
        if left > 0:
            self._per_sub[listener.sub] = left
        else:
            self._per_sub.pop(listener.sub, None)

    def open_streams(self, sub: str) -> int:
        return self._per_sub.get(sub, 0)

    def listeners(self) -> list[Listener]:
        return [listener for group in self._by_municipality.values() for listener in group]

    def wake_all(self) -> None:
        for listener in self.listeners():
            listener.set()

    def notified(self, payload: str) -> None:
        """A NOTIFY of `mkr_alerts`: wake the streams its addressee concerns (all, if it names none)."""
        try:
            addressee = json.loads(payload) if payload else None
        except ValueError:
            addressee = None
        if not isinstance(addressee, dict) or not isinstance(addressee.get("m"), str):
            self.wake_all()
            return
        for listener in self._by_municipality.get(addressee["m"], ()):
            if listener.concerns(addressee):
                listener.set()


class Notifier:
    """LISTENs on `mkr_alerts` and `mkr_deliveries`; one connection per process, reconnecting."""

    def __init__(self, broadcaster: Broadcaster) -> None:
        self.broadcaster = broadcaster
        self.deliveries_due = asyncio.Event()

    async def run(self, runtime: ServiceRuntime) -> None:
        listener = PgListener(
            f"{runtime.name}.notifier",
            db.asyncpg_dsn(db.service_url(runtime.settings, runtime.name)),
            {"mkr_alerts": self.broadcaster.notified, "mkr_deliveries": lambda _: self.deliveries_due.set()},
            runtime.stopping,
            on_connect=self._caught_up,
        )
        try:
            await listener.run()
        finally:
            self.broadcaster.wake_all()  # open streams notice the shutdown now, not at their next heartbeat

    def _caught_up(self) -> None:
        """Whatever arrived while we were not listening is caught up now."""
        self.broadcaster.wake_all()
        self.deliveries_due.set()


class SendFailed(Exception):
    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class DeliveryWorker:
    """Sends due deliveries; any number of replicas may run one.

    Each attempt is its own task, bounded per channel (`webhook_concurrency`, `email_concurrency`) and
    per subscription (`webhook_per_subscription`), and each webhook attempt has a total deadline: a
    receiver that hangs, trickles or answers without end holds one slot for at most that long, and never
    the e-mail's slots or another subscription's.
    """

    def __init__(self, config: NotificationsConfig, notifier: Notifier) -> None:
        self.config = config
        self.notifier = notifier
        self._running: dict[str, int] = {"webhook": 0, "email": 0}
        self._per_subscription: dict[uuid.UUID, int] = {}
        self._slot_freed = asyncio.Event()

    async def run(self, runtime: ServiceRuntime) -> None:
        # No kept-alive connections: requests go to an address (see `pinned`), and a pool keyed by address
        # would reuse a TLS connection verified for one host name for another host on the same address.
        tasks: set[asyncio.Task[None]] = set()
        await seal_legacy_secrets(runtime)
        # The deadline of a whole attempt is `asyncio.timeout` in `send_webhook`; httpx's own per-read timeouts
        # would let a receiver that trickles a byte at a time hold on for ever. Connecting has half of it, so a
        # silent first address leaves time for the next.
        deadline = self.config.webhook_timeout_seconds
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=deadline / 2),
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0, max_connections=None),
        ) as client:
            try:
                while not runtime.stopping.is_set():
                    self.notifier.deliveries_due.clear()
                    self._slot_freed.clear()
                    claimed = 0
                    for channel, slots in (
                        ("email", self.config.email_concurrency),
                        ("webhook", self.config.webhook_concurrency),
                    ):
                        free = min(slots - self._running[channel], self.config.delivery_batch_size)
                        if free <= 0:
                            continue
                        for delivery in await self.claim(runtime, channel, free):
                            claimed += 1
                            self._take(delivery)
                            task = asyncio.create_task(self._attempt_then_free(runtime, client, delivery))
                            tasks.add(task)
                            task.add_done_callback(tasks.discard)
                    if claimed:
                        continue
                    waits = [
                        asyncio.ensure_future(self.notifier.deliveries_due.wait()),
                        asyncio.ensure_future(self._slot_freed.wait()),
                    ]
                    try:
                        await asyncio.wait(waits, timeout=self.config.delivery_poll_seconds,
                                           return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for waiter in waits:
                            waiter.cancel()
            finally:
                for task in list(tasks):
                    task.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.gather(*tasks, return_exceptions=True)

    def _take(self, delivery: Delivery) -> None:
        self._running[delivery.channel] = self._running.get(delivery.channel, 0) + 1
        if delivery.channel == "webhook" and delivery.subscription_id is not None:
            key = delivery.subscription_id
            self._per_subscription[key] = self._per_subscription.get(key, 0) + 1

    def _free(self, delivery: Delivery) -> None:
        self._running[delivery.channel] -= 1
        if delivery.channel == "webhook" and delivery.subscription_id is not None:
            key = delivery.subscription_id
            left = self._per_subscription.get(key, 1) - 1
            if left > 0:
                self._per_subscription[key] = left
            else:
                self._per_subscription.pop(key, None)
        self._slot_freed.set()

    async def _attempt_then_free(self, runtime: ServiceRuntime, client: httpx.AsyncClient, delivery: Delivery) -> None:
        try:
            await self.attempt(runtime, client, delivery)
        except Exception as exc:  # recorded rows are retried after their lease; the worker goes on
            log.warning("delivery attempt failed", extra={"error_class": type(exc).__name__})
        finally:
            self._free(delivery)

    async def claim(self, runtime: ServiceRuntime, channel: str, limit: int) -> list[Delivery]:
        """Lease up to `limit` due rows of `channel`: for webhooks at most `webhook_per_subscription` in
        flight per subscription (counting this process's running ones), so one receiver cannot take every
        slot."""
        lease = datetime.now(UTC) + timedelta(seconds=self.config.delivery_lease_seconds)
        due_now = sa.and_(
            col(Delivery.state) == "pending",
            col(Delivery.next_attempt_at) <= sa.func.now(),
            col(Delivery.channel) == channel,
        )
        async with runtime.sessions() as session, session.begin():
            candidates: Any
            if channel == "webhook":
                cap = self.config.webhook_per_subscription
                saturated = [k for k, n in self._per_subscription.items() if n >= cap]
                ranked = (
                    sa.select(
                        col(Delivery.id).label("id"),
                        col(Delivery.subscription_id).label("subscription_id"),
                        col(Delivery.next_attempt_at).label("due_at"),
                        sa.func.row_number()
                        .over(partition_by=col(Delivery.subscription_id), order_by=col(Delivery.next_attempt_at))
                        .label("rank"),
                    )
                    .where(due_now)
                    .where(col(Delivery.subscription_id).not_in(saturated) if saturated else sa.true())
                    .subquery()
                )
                busy = sa.case(
                    *[(ranked.c.subscription_id == k, n) for k, n in self._per_subscription.items()], else_=0
                ) if self._per_subscription else sa.literal(0)
                candidates = (
                    sa.select(ranked.c.id)
                    .where(ranked.c.rank + busy <= cap)
                    .order_by(ranked.c.due_at)
                    .limit(limit)
                    .scalar_subquery()
                )
            else:
                candidates = sa.select(col(Delivery.id)).where(due_now).order_by(col(Delivery.next_attempt_at)).limit(
                    limit
                ).scalar_subquery()
            locked = (
                sa.select(col(Delivery.id))
                .where(col(Delivery.id).in_(candidates), due_now)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            )
            rows = await session.execute(
                sa.update(Delivery).where(col(Delivery.id).in_(locked)).values(next_attempt_at=lease).returning(Delivery)
            )
            return list(rows.scalars().all())

    async def attempt(self, runtime: ServiceRuntime, client: httpx.AsyncClient, delivery: Delivery) -> None:
        status_code: int | None = None
        error: str | None = None
        with observability.span(
            f"{delivery.channel} deliver", kind="CLIENT", parent=observability.traceparent_in(delivery.payload),
            **{"mkr.delivery.id": str(delivery.id), "mkr.delivery.channel": delivery.channel,
               "mkr.event.type": delivery.event_type, "mkr.delivery.attempt": delivery.attempts + 1},
        ) as current:
            try:
                if delivery.channel == "webhook":
                    status_code = await self.send_webhook(runtime, client, delivery)
                else:
                    await self.send_email(runtime, delivery)
            except SendFailed as exc:
                error, status_code = str(exc), exc.status_code
            except Exception as exc:  # the network, a resolver, a malformed address…
                error = type(exc).__name__
            observability.span_outcome(current, ok=error is None, status_code=status_code)
        await self.record(runtime, delivery.id, ok=error is None, status_code=status_code, error=error)

    async def send_webhook(self, runtime: ServiceRuntime, client: httpx.AsyncClient, delivery: Delivery) -> int:
        async with runtime.sessions() as session:
            subscription = await session.get(Subscription, delivery.subscription_id)
        if subscription is None or subscription.deleted_at is not None:
            raise SendFailed("subscription deleted")
        secret = subscription_secret(runtime, subscription)
        body = delivery.payload.encode()
        deadline = self.config.webhook_timeout_seconds
        try:
            async with asyncio.timeout(deadline):  # resolving, connecting, sending and reading: all of it
                addresses = await check_destination(
                    subscription.url, runtime.settings.environment, runtime.settings.webhook_allowed_hosts
                )
                headers = {
                    "Content-Type": "application/json",
                    "Accept-Encoding": "identity",
                    "User-Agent": "mkr-notifications/1",
                    "X-MKR-Event-Id": str(delivery.event_id),
                    "X-MKR-Event-Type": delivery.event_type,
                    "X-MKR-Delivery-Id": str(delivery.id),
                    "X-MKR-Signature": domain.signature(secret, body),
                    **domain.standard_webhook_headers(secret, str(delivery.event_id), int(time.time()), body),
                }
                if traceparent := observability.current_traceparent():
                    headers["traceparent"] = traceparent  # the subscriber may continue the trace
                tried = interleaved(addresses)[:MAX_ADDRESSES]  # bounded: each may take the whole connect timeout
                for index, address in enumerate(tried):
                    url, host, extensions = pinned(subscription.url, address)
                    request = client.build_request(
                        "POST", url, content=body, extensions=extensions, headers={**host, **headers}
                    )
                    try:
                        response = await client.send(request, stream=True)
                    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # not reached: the next address
                        if index == len(tried) - 1:
                            raise SendFailed(f"no answer ({type(exc).__name__})") from exc
                        continue
                    except httpx.HTTPError as exc:
                        raise SendFailed(f"no answer ({type(exc).__name__})") from exc
                    try:
                        await read_at_most(response, self.config.webhook_max_response_bytes)
                    except httpx.HTTPError:
                        pass  # the status is what counts; an answer cut short does not undo it
                    finally:
                        await response.aclose()
                    break
        except TimeoutError as exc:
            raise SendFailed(f"no answer within {deadline:g} s") from exc
        if not 200 <= response.status_code < 300:
            raise SendFailed(f"HTTP {response.status_code}", response.status_code)
        return response.status_code

    async def send_email(self, runtime: ServiceRuntime, delivery: Delivery) -> None:
        if not self.config.smtp_host:
            raise SendFailed("smtp disabled")
        async with runtime.sessions() as session:
            alert = await session.get(Alert, delivery.alert_id)
        if alert is None or not delivery.address:
            raise SendFailed("alert missing")
        # The profile's own language first, English below it (Albania: Albanian, then English).
        profile = runtime.settings.country
        second = "en" if profile.language != "en" else profile.languages[-1]
        title_sq, body_sq = domain.render(alert.type, alert.params, profile.language, profile)
        title_en, body_en = domain.render(alert.type, alert.params, second, profile)
        message = EmailMessage()
        message["From"] = self.config.smtp_from
        message["To"] = delivery.address
        message["Subject"] = title_sq
        message["Message-ID"] = f"<{delivery.id}@mkr>"
        message["X-MKR-Event-Id"] = str(delivery.event_id)
        message.set_content(f"{body_sq}\n\n--\n{title_en}\n{body_en}\n")
        try:
            # A whole conversation's deadline: aiosmtplib's timeout is per step, which a trickling server evades.
            async with asyncio.timeout(self.config.smtp_timeout_seconds * 3):
                await aiosmtplib.send(
                    message,
                    hostname=self.config.smtp_host,
                    port=self.config.smtp_port,
                    start_tls=self.config.smtp_starttls,
                    username=self.config.smtp_username,
                    password=self.config.smtp_password,
                    timeout=self.config.smtp_timeout_seconds,
                )
        except TimeoutError as exc:
            raise SendFailed("smtp: no answer in time") from exc
        except aiosmtplib.SMTPException as exc:
            raise SendFailed(f"smtp: {type(exc).__name__}") from exc

    async def record(
        self, runtime: ServiceRuntime, delivery_id: uuid.UUID, *, ok: bool, status_code: int | None, error: str | None
    ) -> None:
        now = datetime.now(UTC)
        async with runtime.sessions() as session, session.begin():
            delivery = (
                await session.execute(sa.select(Delivery).where(col(Delivery.id) == delivery_id).with_for_update())
            ).scalar_one_or_none()
            if delivery is None or delivery.state != "pending":
                return  # cancelled meanwhile (subscription deleted)
            delivery.attempts += 1
            delivery.last_attempt_at = now
            delivery.last_status_code = status_code
            delivery.last_error = error
            entry: dict[str, Any] = {"attempt": delivery.attempts, "at": now.isoformat(), "status_code": status_code}
            entry["outcome"] = "succeeded" if ok else "failed"
            if error:
                entry["error"] = error
            delivery.history = [*delivery.history, entry][-HISTORY_KEPT:]
            outcome = "succeeded" if ok else "retry"
            if ok:
                delivery.state = "succeeded"
                delivery.delivered_at = now
            elif delivery.attempts >= self.config.delivery_max_attempts:
                delivery.state = "dead"
                outcome = "dead"
                log.warning(
                    "delivery dead-lettered",
                    extra={
                        "delivery_id": str(delivery.id),
                        "event_type": delivery.event_type,
                        "attempt": delivery.attempts,
                    },
                )
                # Never a failure about a failure: that could chase a dead endpoint for ever.
                if delivery.event_type != domain.NOTIFICATION_FAILED:
                    await notification_failed(session, runtime.settings, delivery)
            else:
                delivery.next_attempt_at = now + timedelta(
                    seconds=domain.backoff_seconds(
                        delivery.attempts,
                        self.config.delivery_backoff_base_seconds,
                        self.config.delivery_backoff_cap_seconds,
                    )
                )
            session.add(delivery)
        DELIVERY_ATTEMPTS.labels(delivery.channel, outcome).inc()


Resolver = Callable[[str, int], Any]


async def read_at_most(response: httpx.Response, limit: int) -> int:
    """Read at most `limit` bytes of the answer's raw body (no decoding), then stop; returns the count."""
    read = 0
    if limit <= 0:
        return 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read >= limit:
            break
    return read


def subscription_secret(runtime: ServiceRuntime, subscription: Subscription) -> str:
    """The subscription's signing secret, opened from its sealed form at rest (a row of before sealing is
    sealed at the next start, see `seal_legacy_secrets`)."""
    if not subscription.secret_sealed:
        return subscription.secret
    return secret_cipher(runtime.settings).decrypt(subscription.secret, secret_context(subscription.id))


def seal_secret(settings: Settings, subscription_id: uuid.UUID, secret: str) -> str:
    return secret_cipher(settings).encrypt(secret, secret_context(subscription_id))


async def seal_legacy_secrets(runtime: ServiceRuntime) -> int:
    """Encrypt the secrets stored in the clear before secrets were sealed; returns how many."""
    async with runtime.sessions() as session, session.begin():
        rows = (
            (
                await session.execute(
                    sa.select(Subscription).where(col(Subscription.secret_sealed).is_(False)).with_for_update(
                        skip_locked=True
                    )
                )
            )
            .scalars()
            .all()
        )
        for row in rows:
            row.secret = seal_secret(runtime.settings, row.id, row.secret)
            row.secret_sealed = True
            session.add(row)
    return len(rows)


def secret_context(subscription_id: uuid.UUID) -> str:
    return f"notifications.subscriptions.secret:{subscription_id}"


_CIPHERS: dict[int, tuple[Settings, FieldCipher]] = {}


def secret_cipher(settings: Settings) -> FieldCipher:
    """One cipher per settings object (the entry keeps the settings alive, so its id stays its own)."""
    entry = _CIPHERS.get(id(settings))
    if entry is None or entry[0] is not settings:
        entry = _CIPHERS[id(settings)] = (settings, FieldCipher.from_settings(settings))
    return entry[1]


async def check_destination(url: str, environment: str, allowed_hosts: list[str]) -> list[str]:
    """The URL rules plus the addresses its host resolves to now (refused if internal, see
    `domain.check_address`); returns those addresses, to connect to, so that nothing resolves the name
    again after the check. A name that does not resolve is refused in the same words as an internal one."""
    try:
        host = domain.check_url(url, allowed_hosts=allowed_hosts)
    except domain.UnsafeUrl as exc:
        raise SendFailed(str(exc)) from exc
    allow_listed = bool(allowed_hosts) and domain.host_allowed(host, allowed_hosts)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise SendFailed(domain.REFUSED_ADDRESS) from exc
    try:
        for info in infos:
            domain.check_address(str(info[4][0]), environment=environment, allow_listed=allow_listed)
    except domain.UnsafeUrl as exc:
        raise SendFailed(str(exc)) from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise SendFailed(domain.REFUSED_ADDRESS)
    return addresses


MAX_ADDRESSES = 3


def interleaved(addresses: list[str]) -> list[str]:
    """The resolver's order, alternating IPv6 and IPv4 (as happy eyeballs would), so one family that
    silently drops traffic does not use up every attempt."""
    v6 = [a for a in addresses if ":" in a]
    v4 = [a for a in addresses if ":" not in a]
    first, second = (v6, v4) if addresses and ":" in addresses[0] else (v4, v6)
    out: list[str] = []
    for i in range(max(len(first), len(second))):
        out += first[i : i + 1] + second[i : i + 1]
    return out


def pinned(url: str, address: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL with its host replaced by the checked address, the Host header, and the TLS server name.

    The connection goes to the address that was checked (no second lookup a DNS-rebinding attacker could
    answer differently), while the receiver still sees its own name in `Host`, SNI and the certificate
    check."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    ip = ipaddress.ip_address(address.split("%")[0])
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = f"{literal}:{parts.port}" if parts.port is not None else literal
    host_header = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        host_header = f"{host_header}:{parts.port}"
    extensions: dict[str, Any] = {"sni_hostname": host} if parts.scheme == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), {"Host": host_header}, extensions
