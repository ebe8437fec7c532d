"""What the profiling tools share (profile_report, profile_referral): their settings, the embedded PostgreSQL
and broker they run on, a cProfile on the process clock, and self CPU summed by library."""

from __future__ import annotations

import asyncio
import collections
import cProfile
import os
import pstats
import shutil
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from shared.embedded import ensure_postgres, free_port, start_broker, stop_postgres, stop_process
from shared.keys import ensure_local_keypair
from shared.settings import Settings


def profile_settings(database_url: str, bootstrap: str, state: Path, tag: str) -> Settings:
    """Settings of a profiling run: databases and topics of its own (`tag` and the pid in their names)."""
    settings = Settings(
        environment="test", state_dir=state, database_url=database_url,
        database_prefix=f"mkr{tag}_{os.getpid()}_", kafka_bootstrap=bootstrap,
        kafka_topic_prefix=f"{tag}{os.getpid()}.", jwt_issuer="mkr-test", jwt_audience="mkr",
    )
    ensure_local_keypair(settings)
    return settings


def run_profile(tag: str, profile: Callable[[Settings], Coroutine[Any, Any, None]]) -> int:
    """`profile` on the PostgreSQL of MKR_DATABASE_URL (else an embedded one) and an embedded broker, both
    started here and stopped after it."""
    state = Path(tempfile.mkdtemp(prefix=f"mkr-{tag}-"))
    url = os.environ.get("MKR_DATABASE_URL")
    broker = start_broker(port := free_port(), state / "tansu.log")
    try:
        url = url or ensure_postgres(state, cleanup_mode="delete")
        asyncio.run(profile(profile_settings(url, f"127.0.0.1:{port}", state, tag)))
    finally:
        stop_process(broker)
        if not os.environ.get("MKR_DATABASE_URL"):
            stop_postgres(state)
        shutil.rmtree(state, ignore_errors=True)
    return 0


def cpu_profiler() -> cProfile.Profile:
    """Self CPU time by function on the process clock (cProfile's default, the wall clock, counts a loaded
    machine's preemption as time in whatever call was running, such as a socket send)."""
    return cProfile.Profile(time.process_time)


LAYERS = (
    ("services/", "our services"), ("shared/", "our shared library"), ("sqlalchemy", "SQLAlchemy"),
    ("asyncpg", "asyncpg"), ("greenlet", "SQLAlchemy"), ("starlette", "FastAPI/Starlette"),
    ("fastapi", "FastAPI/Starlette"), ("pydantic", "pydantic"), ("httpx", "load generator (httpx)"),
    ("httpcore", "load generator (httpx)"), ("tests/", "load generator (httpx)"), ("aiokafka", "aiokafka"),
    ("kafka", "aiokafka"), ("opentelemetry", "OpenTelemetry"), ("prometheus", "Prometheus client"),
    ("jose", "JWT"), ("cryptography", "cryptography"), ("asyncio", "asyncio event loop"),
    ("selectors", "asyncio event loop"), ("socket", "socket calls"), ("json", "json"), ("logging", "logging"),
)


def print_layers(stats: pstats.Stats, reports: int) -> None:
    """Self CPU time summed by library (the first match of each function's file name), per report."""
    by_layer: collections.Counter[str] = collections.Counter()
    for (filename, _line, name), row in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{filename} {name}"
        layer = next((label for key, label in LAYERS if key in where), "other (builtins, stdlib)")
        by_layer[layer] += row[2]
    total = sum(by_layer.values())
    print(f"self CPU by layer (cProfile, process time; {1000 * total / reports:.2f} ms/report with its overhead):")
    for layer, seconds in by_layer.most_common():
        print(f"  {1000 * seconds / reports:6.2f} ms  {100 * seconds / total:5.1f} %  {layer}")
