"""Request ids, structured JSON logs without personal data, and Prometheus metrics."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import problem_response, unexpected_response

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
# Gauges under several workers: only the leader sets them, so the most recent value of a live worker.
OUTBOX_PENDING = Gauge(
    "mkr_outbox_pending", "Outbox rows seen unpublished in the last relay pass", multiprocess_mode="livemostrecent"
)
# The watchdog's view (labels are code-defined names: a consumer, a service, a fixed reason).
CONSUMER_LAG = Gauge(
    "mkr_consumer_lag", "Records between a consumer's position and its partitions' end offsets", ["consumer"],
    multiprocess_mode="livemostrecent",
)
CONSUMER_PARTITION_LAG = Gauge(
    "mkr_consumer_partition_lag",
    "Records between a consumer's position and one assigned partition's end offset",
    ["consumer", "topic", "partition"],
    multiprocess_mode="livemostrecent",
)
OUTBOX_OLDEST_UNPUBLISHED = Gauge(
    "mkr_outbox_oldest_unpublished_seconds", "Age of the oldest outbox row not yet published", ["service"],
    multiprocess_mode="livemostrecent",
)
# 1 in the worker that runs the relay, consumers and jobs (shared/leader.py), 0 in the others: summed over
# the live workers, 1 per service process group (and 0 in one whose leader is another replica).
WORKER_LEADER = Gauge(
    "mkr_worker_leader", "Whether this worker is its service's leader (runs relay, consumers, jobs)", ["service"],
    multiprocess_mode="livesum",
)
CONSUMER_RECREATED = Counter(
    "mkr_consumer_recreated_total", "Kafka clients the watchdog recreated", ["consumer", "reason"]
)
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
# Metric labels are bounded: any other method a client invents is counted as "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


def route_label(scope: Scope) -> str:
    """The matched route's template (`/v1/cases/{case_id}`), never the raw path; "unmatched" otherwise."""
    template = getattr(scope.get("route"), "path", None)
    return template if isinstance(template, str) and template else "unmatched"


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
                response = unexpected_response()
                await response(scope, receive, _send)
        finally:
            template = route_label(scope)
            elapsed = time.perf_counter() - started
            method = method_label(str(scope.get("method", "")))
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


# --- several workers (MKR_WORKERS > 1): Prometheus multiprocess mode ---
#
# `mkr serve` points PROMETHEUS_MULTIPROC_DIR at a fresh directory per service process group before its
# workers start; each worker writes its samples there and /metrics (whichever worker answers) sums the
# counters and histograms of all of them, and gauges by their `multiprocess_mode`.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE = re.compile(r"gauge_live\w+_(\d+)\.db")


def multiproc_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def prune_dead_processes() -> None:
    """Forget the live gauges of workers that died without a clean exit (killed: the supervisor restarts
    them under a new pid); their counters stay, counted."""
    directory = multiproc_dir()
    if directory is None or not directory.is_dir():
        return
    for path in directory.glob("gauge_live*_*.db"):
        match = _LIVE_GAUGE.fullmatch(path.name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(directory))
        except PermissionError:
            pass  # alive, another user's


def mark_this_process_dead() -> None:
    """At a worker's clean exit: its live gauges leave the aggregate."""
    directory = multiproc_dir()
    if directory is not None and directory.is_dir():
        multiprocess.mark_process_dead(os.getpid(), str(directory))


async def metrics_endpoint(_: Request) -> Response:
    if multiproc_dir() is None:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
    prune_dead_processes()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


# --- traces (OpenTelemetry) ---
#
# Off unless the standard OTEL_* variables ask for an exporter (OTEL_TRACES_EXPORTER=otlp|console, or an
# OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT; OTEL_SDK_DISABLED=true wins): then no middleware is installed and
# the helpers below return at once. One trace per report: the HTTP request, the outbox row (the W3C
# `traceparent` in the envelope: CloudEvents' distributed-tracing extension), the Kafka message (a
# `traceparent` header), each consumer, and the webhook and e-mail deliveries. Spans carry route
# templates, ids, event types and status codes only: never a body, a query string, a name, nor an
# exception's message (messages can quote values).

_tracer: Any = None  # an opentelemetry Tracer when tracing is on


def tracing_requested(environ: dict[str, str] | None = None) -> bool:
    import os

    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def configure_tracing(service: str) -> None:
    """Install a tracer provider from OTEL_* variables, once per process; nothing when not requested."""
    global _tracer
    if _tracer is not None or not tracing_requested():
        return
    import os

    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by Resource.create; the sampler by the provider.
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or f"mkr-{service}"})
    provider = TracerProvider(resource=resource)
    exporters: list[SpanExporter] = []
    for name in (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(","):
        name = name.strip().lower()
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())  # OTEL_EXPORTER_OTLP_* (endpoint, headers, timeout)
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_*
    trace.set_tracer_provider(provider)
    use_tracer_provider(provider)


def use_tracer_provider(provider: Any | None) -> None:
    """Trace with this provider (None: tracing off). For configure_tracing and for tests."""
    global _tracer
    _tracer = provider.get_tracer("mkr") if provider is not None else None


def tracing_enabled() -> bool:
    return _tracer is not None


def _propagator() -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span (None when tracing is off or no span is current)."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    _propagator().inject(carrier)
    return carrier.get("traceparent")


def _context_of(traceparent: str | None) -> Any:
    return _propagator().extract({"traceparent": traceparent}) if traceparent else None


def traceparent_in(payload: str) -> str | None:
    """The `traceparent` attribute of a stored envelope (JSON), when tracing is on."""
    if _tracer is None or '"traceparent"' not in payload:
        return None
    try:
        value = json.loads(payload).get("traceparent")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


class _NoSpan:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


_NO_SPAN = _NoSpan()


class _Span:
    """A span made current for a block; an exception sets an error status with its class name only."""

    def __init__(self, name: str, kind: str, parent: str | None, attributes: dict[str, Any]) -> None:
        from opentelemetry import trace

        self._cm = _tracer.start_as_current_span(
            name, context=_context_of(parent), kind=getattr(trace.SpanKind, kind), attributes=attributes,
            record_exception=False, set_status_on_exception=False,
        )
        self.span: Any = None

    def __enter__(self) -> Any:
        self.span = self._cm.__enter__()
        return self.span

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc_type is not None and not issubclass(exc_type, asyncio.CancelledError):
            from opentelemetry.trace import Status, StatusCode

            self.span.set_attribute("error.type", exc_type.__name__)
            self.span.set_status(Status(StatusCode.ERROR))
        self._cm.__exit__(None, None, None)


def span(name: str, *, kind: str = "INTERNAL", parent: str | None = None, **attributes: Any) -> Any:
    """A context manager: a span (child of `parent`, a traceparent, else of the current span), or nothing."""
    if _tracer is None:
        return _NO_SPAN
    return _Span(name, kind, parent, {k: v for k, v in attributes.items() if v is not None})


class TracingMiddleware:
    """A server span per request: `METHOD /route/{template}`, the status code; no path, query or body."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Probes and scrapes are noise in a trace backend: not traced.
        if scope["type"] != "http" or _tracer is None or scope.get("path") in _PROBES:
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers") or []:
            if name == b"traceparent":
                incoming = value.decode("latin-1")
        method = scope.get("method", "")
        status = 500

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with span(method, kind="SERVER", parent=incoming, **{"mkr.service": self.service,
                                                              "http.request.method": method}) as current:
            try:
                await self.app(scope, receive, _send)
            finally:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                current.update_name(f"{method} {route}")
                current.set_attribute("http.route", route)
                current.set_attribute("http.response.status_code", status)
                if status >= 500:
                    from opentelemetry.trace import Status, StatusCode

                    current.set_status(Status(StatusCode.ERROR))


def trace_payload() -> str:
    """A stored row's trace context as JSON (`{"traceparent": ...}`), or "" when tracing is off."""
    traceparent = current_traceparent()
    return json.dumps({"traceparent": traceparent}) if traceparent else ""


def span_outcome(current: Any, *, ok: bool, status_code: int | None = None) -> None:
    """Mark a delivery span (no-op when tracing is off): its status code and success."""
    if current is None:
        return
    from opentelemetry.trace import Status, StatusCode

    if status_code is not None:
        current.set_attribute("http.response.status_code", status_code)
    current.set_attribute("mkr.delivery.outcome", "succeeded" if ok else "failed")
    if not ok:
        current.set_status(Status(StatusCode.ERROR))
