"""Request ids, structured JSON logs without personal data, and Prometheus metrics."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
import uuid
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import problem_response

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
service_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("service", default=None)

HTTP_REQUESTS = Counter(
    "mkr_http_requests_total", "HTTP requests", ["service", "method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "mkr_http_request_duration_seconds",
    "HTTP request latency",
    ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_PUBLISHED = Counter("mkr_events_published_total", "Events the outbox relay published")
EVENTS_CONSUMED = Counter("mkr_events_consumed_total", "Events consumed", ["consumer", "result"])
OUTBOX_PENDING = Gauge("mkr_outbox_pending", "Outbox rows seen unpublished in the last relay pass")
SLA_BREACHES = Counter(
    "mkr_referral_sla_breaches_total", "Referrals whose acknowledgement deadline passed (raised once each)"
)

# Extra fields a log line may carry; anything else passed in `extra` is dropped, so a
# careless call cannot put a name or a phone number into the logs.
SAFE_FIELDS = frozenset(
    {
        "request_id", "service", "method", "route", "status", "duration_ms", "error_class", "consumer",
        "event_id", "event_type", "attempt", "offset", "case_id", "referral_id", "delivery_id", "count",
    }
)
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if rid := request_id_var.get():
            entry["request_id"] = rid
        if svc := service_var.get():
            entry["service"] = svc
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key in SAFE_FIELDS:
                entry[key] = value
        if record.exc_info:
            # The class only: tracebacks and messages can carry row values.
            entry["error_class"] = record.exc_info[0].__name__ if record.exc_info[0] else None
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every URL it calls at INFO; query strings are not for logs.
    for noisy in ("uvicorn.access", "aiokafka", "kafka", "alembic", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    logging.getLogger("uvicorn.error").handlers[:] = []
    logging.getLogger("uvicorn").handlers[:] = []
    logging.getLogger("uvicorn").propagate = True


class RequestContextMiddleware:
    """Request id in and out, one log line and metrics per request, and a last-resort 500.

    Catching here (inside Starlette's error middleware) keeps tracebacks from being printed
    by the server: they can quote personal data.
    """

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        self.log = logging.getLogger(f"mkr.{service}.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if incoming and len(incoming) <= 128 and incoming.isprintable() else uuid.uuid4().hex
        token = request_id_var.set(rid)
        service_token = service_var.set(self.service)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def _send(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        except Exception as exc:
            if not response_started and is_unstorable_input(exc):
                # The transaction was rolled back: nothing changed, and the fault is in the input.
                self.log.info("unstorable input refused", extra={"error_class": type(exc).__name__})
                response = problem_response(
                    422,
                    "The request holds a value that cannot be stored (a NUL character, an unpaired "
                    "surrogate, or a number or text out of range).",
                    errors=[{"loc": ["body"], "msg": "value cannot be stored"}],
                )
                await response(scope, receive, _send)
                return
            self.log.error("unhandled error", extra={"error_class": type(exc).__name__})
            if not response_started:
                response = problem_response(500, "The server could not complete the request; it has been logged.")
                await response(scope, receive, _send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            method = scope.get("method", "")
            HTTP_REQUESTS.labels(self.service, method, template, str(status)).inc()
            HTTP_LATENCY.labels(self.service, method, template).observe(elapsed)
            # The route template, never the raw path or query: a query may hold a name.
            self.log.log(
                logging.DEBUG if template in _PROBES else logging.INFO,
                "request",
                extra={"method": method, "route": template, "status": status,
                       "duration_ms": round(elapsed * 1000, 1)},
            )
            request_id_var.reset(token)
            service_var.reset(service_token)


def is_unstorable_input(exc: BaseException) -> bool:
    """True when the database (or the driver) refused a value itself: bad input, not a fault of ours."""
    import asyncpg
    from sqlalchemy import exc as sa_exc

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UnicodeEncodeError | sa_exc.DataError | asyncpg.exceptions.DataError):
            return True
        current = current.__cause__ or current.__context__
    return False


async def metrics_endpoint(_: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
