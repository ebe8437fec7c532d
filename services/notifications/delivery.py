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
import logging
import socket
import uuid
from collections.abc import Callable
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

log = logging.getLogger("mkr.notifications")

HISTORY_KEPT = 20
DELIVERY_ATTEMPTS = Counter(
    "mkr_notification_delivery_attempts_total", "Webhook and e-mail delivery attempts", ["channel", "outcome"]
)


class Broadcaster:
    """Wakes every open SSE stream of this process when any replica inserts an alert (NOTIFY)."""

    def __init__(self) -> None:
        self._listeners: set[asyncio.Event] = set()

    def subscribe(self) -> asyncio.Event:
        event = asyncio.Event()
        self._listeners.add(event)
        return event

    def unsubscribe(self, event: asyncio.Event) -> None:
        self._listeners.discard(event)

    def wake_all(self) -> None:
        for event in self._listeners:
            event.set()


class Notifier:
    """LISTENs on `mkr_alerts` and `mkr_deliveries`; one connection per process, reconnecting."""

    def __init__(self, broadcaster: Broadcaster) -> None:
        self.broadcaster = broadcaster
        self.deliveries_due = asyncio.Event()

    async def run(self, runtime: ServiceRuntime) -> None:
        dsn = db.asyncpg_dsn(db.service_url(runtime.settings, runtime.name))
        try:
            await self._listen(runtime, dsn)
        finally:
            self.broadcaster.wake_all()  # open streams notice the shutdown now, not at their next heartbeat

    async def _listen(self, runtime: ServiceRuntime, dsn: dict[str, object]) -> None:
        import asyncpg

        attempt = 0
        while not runtime.stopping.is_set():
            conn = None
            try:
                conn = await asyncpg.connect(**dsn, timeout=10)  # type: ignore[arg-type]
                lost = asyncio.Event()
                conn.add_termination_listener(lambda *_, lost=lost: lost.set())
                await conn.add_listener("mkr_alerts", lambda *_: self.broadcaster.wake_all())
                await conn.add_listener("mkr_deliveries", lambda *_: self.deliveries_due.set())
                # Whatever arrived while we were not listening is caught up now.
                self.broadcaster.wake_all()
                self.deliveries_due.set()
                attempt = 0
                while not runtime.stopping.is_set() and not conn.is_closed():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), timeout=5)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                log.warning("notification listener failed", extra={"error_class": type(exc).__name__})
                await asyncio.sleep(min(10.0, 0.5 * 2**attempt))
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), timeout=5)


class SendFailed(Exception):
    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class DeliveryWorker:
    """Sends due deliveries; any number of replicas may run one."""

    def __init__(self, config: NotificationsConfig, notifier: Notifier) -> None:
        self.config = config
        self.notifier = notifier

    async def run(self, runtime: ServiceRuntime) -> None:
        # No kept-alive connections: requests go to an address (see `pinned`), and a pool keyed by address
        # would reuse a TLS connection verified for one host name for another host on the same address.
        async with httpx.AsyncClient(
            timeout=self.config.webhook_timeout_seconds,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as client:
            while not runtime.stopping.is_set():
                self.notifier.deliveries_due.clear()
                claimed = await self.claim(runtime)
                if claimed:
                    await asyncio.gather(*(self.attempt(runtime, client, d) for d in claimed))
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.notifier.deliveries_due.wait(), timeout=self.config.delivery_poll_seconds
                    )

    async def claim(self, runtime: ServiceRuntime) -> list[Delivery]:
        lease = datetime.now(UTC) + timedelta(seconds=self.config.delivery_lease_seconds)
        async with runtime.sessions() as session, session.begin():
            due = (
                sa.select(col(Delivery.id))
                .where(col(Delivery.state) == "pending", col(Delivery.next_attempt_at) <= sa.func.now())
                .order_by(col(Delivery.next_attempt_at))
                .limit(self.config.delivery_batch_size)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            )
            rows = await session.execute(
                sa.update(Delivery).where(col(Delivery.id).in_(due)).values(next_attempt_at=lease).returning(Delivery)
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
        addresses = await check_destination(
            subscription.url, runtime.settings.environment, runtime.settings.webhook_allowed_hosts
        )
        body = delivery.payload.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "mkr-notifications/1",
            "X-MKR-Event-Id": str(delivery.event_id),
            "X-MKR-Event-Type": delivery.event_type,
            "X-MKR-Delivery-Id": str(delivery.id),
            "X-MKR-Signature": domain.signature(subscription.secret, body),
        }
        if traceparent := observability.current_traceparent():
            headers["traceparent"] = traceparent  # the subscriber may continue the trace
        tried = interleaved(addresses)[:MAX_ADDRESSES]  # bounded: each may take the whole connect timeout
        for index, address in enumerate(tried):
            url, host, extensions = pinned(subscription.url, address)
            try:
                response = await client.post(url, content=body, extensions=extensions, headers={**host, **headers})
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # not reached: the next address
                if index == len(tried) - 1:
                    raise SendFailed(f"no answer ({type(exc).__name__})") from exc
            except httpx.HTTPError as exc:
                raise SendFailed(f"no answer ({type(exc).__name__})") from exc
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
        title_sq, body_sq = domain.render(alert.type, alert.params, "sq")
        title_en, body_en = domain.render(alert.type, alert.params, "en")
        message = EmailMessage()
        message["From"] = self.config.smtp_from
        message["To"] = delivery.address
        message["Subject"] = title_sq
        message["Message-ID"] = f"<{delivery.id}@mkr>"
        message["X-MKR-Event-Id"] = str(delivery.event_id)
        message.set_content(f"{body_sq}\n\n--\n{title_en}\n{body_en}\n")
        try:
            await aiosmtplib.send(
                message,
                hostname=self.config.smtp_host,
                port=self.config.smtp_port,
                start_tls=self.config.smtp_starttls,
                username=self.config.smtp_username,
                password=self.config.smtp_password,
                timeout=self.config.smtp_timeout_seconds,
            )
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
            published = False
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
                    published = True
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
        if published:
            runtime.relay.wake()


Resolver = Callable[[str, int], Any]


async def check_destination(url: str, environment: str, allowed_hosts: list[str]) -> list[str]:
    """The URL rules plus the addresses its host resolves to now (refused if internal in production);
    returns those addresses, to connect to, so that nothing resolves the name again after the check."""
    try:
        host = domain.check_url(url, allowed_hosts=allowed_hosts)
    except domain.UnsafeUrl as exc:
        raise SendFailed(str(exc)) from exc
    allow_listed = bool(allowed_hosts) and domain.host_allowed(host, allowed_hosts)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise SendFailed("host does not resolve") from exc
    try:
        for info in infos:
            domain.check_address(str(info[4][0]), environment=environment, allow_listed=allow_listed)
    except domain.UnsafeUrl as exc:
        raise SendFailed(str(exc)) from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise SendFailed("host does not resolve")
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
