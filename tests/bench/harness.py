"""A small asyncio load generator: closed-loop clients, open-loop arrivals, exact percentiles."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class Recorder:
    """Latencies in seconds, kept whole (a run has at most a few hundred thousand): exact percentiles."""

    samples: list[float] = field(default_factory=list)
    errors: int = 0

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    def percentile(self, p: float) -> float:
        if not self.samples:
            return math.nan
        ordered = sorted(self.samples)
        rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
        return ordered[rank]

    def summary_ms(self) -> dict[str, float]:
        return {
            "count": float(len(self.samples)),
            "p50_ms": round(self.percentile(50) * 1000, 2),
            "p99_ms": round(self.percentile(99) * 1000, 2),
            "max_ms": round(max(self.samples, default=math.nan) * 1000, 2),
        }


async def closed_loop(
    call: Callable[[int], Awaitable[bool]], *, concurrency: int, seconds: float, warmup: float = 1.0
) -> tuple[Recorder, float]:
    """`concurrency` clients call back to back for `seconds`; returns latencies and completed calls per second."""
    recorder = Recorder()
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds
    counter = 0

    async def client(worker: int) -> None:
        nonlocal counter
        n = 0
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            ok = await call(worker * 1_000_000 + n)
            ended = time.perf_counter()
            n += 1
            if began >= measure_from:
                if ok:
                    recorder.add(ended - began)
                    counter += 1
                else:
                    recorder.errors += 1

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return recorder, counter / seconds


async def open_loop(call: Callable[[int], Awaitable[float | None]], *, rate: float, seconds: float) -> Recorder:
    """Start calls at a fixed rate regardless of how long they take; each returns its own latency."""
    recorder = Recorder()
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int) -> None:
        latency = await call(i)
        if latency is None:
            recorder.errors += 1
        else:
            recorder.add(latency)

    start = time.perf_counter()
    total = int(rate * seconds)
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return recorder


def summarise(samples: list[float], errors: int = 0) -> dict[str, float]:
    """The usual latency columns for a list of seconds (exact percentiles)."""
    return Recorder(samples=list(samples), errors=errors).summary_ms()


async def sequential(call: Callable[[int], Awaitable[bool]], *, count: int) -> Recorder:
    """One client, `count` calls back to back: latency without queueing."""
    recorder = Recorder()
    for i in range(count):
        began = time.perf_counter()
        ok = await call(i)
        if ok:
            recorder.add(time.perf_counter() - began)
        else:
            recorder.errors += 1
    return recorder
