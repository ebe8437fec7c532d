"""Profile referral's consumer in-process: `python -m tests.bench.profile_referral [--events N] [--html FILE]`.

Starts referral alone (in this process, as the tests do) on the PostgreSQL of MKR_DATABASE_URL (else an
embedded one) and an embedded broker, gives a municipality the bench's six members, and hands the running
consumer's `_handle_all` the records a fetch would bring: `case.reported` events built as
`referral_apply_rate` builds them (intake's own event builder), 200 per fetch split over 3 partitions.
Prints, per event:
- the SQL statements and round trips (every statement the engine sends, counted by the SQLAlchemy
  `before_cursor_execute` event; an `executemany` counts once) and each one's mean wall time,
- wall and CPU milliseconds (sequential, so wall = CPU + waiting on PostgreSQL),
- a pyinstrument profile (wall time, awaits included; `--html` for the interactive one),
- cProfile's functions by self time over another N events (where the CPU goes).
`--plain`: the figures only, e.g. under `py-spy record --format raw -- python -m tests.bench.profile_referral`
(py-spy samples only running code by default: CPU, not waiting).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import pstats
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiokafka import ConsumerRecord
from pyinstrument import Profiler
from sqlalchemy import event

from services.referral.models import Member
from shared.events import EventConsumer
from shared.settings import Settings
from tests.bench import profiling
from tests.bench.scenarios import _backlog_rows
from tests.support import running_stack

FETCH = 200
PARTITIONS = 3


def _records(settings: Settings, municipality: str, count: int, offset: list[int]) -> list[list[ConsumerRecord]]:
    """Fetches of `count` records: each a list of per-partition record lists, as getmany hands them over."""
    rows = _backlog_rows(settings, municipality, count)
    fetches: list[list[ConsumerRecord]] = []
    for at in range(0, len(rows), FETCH):
        partitions: dict[int, list[ConsumerRecord]] = collections.defaultdict(list)
        for row in rows[at : at + FETCH]:
            partition = hash(row["key"]) % PARTITIONS
            offset[0] += 1
            partitions[partition].append(ConsumerRecord(
                topic=row["topic"], partition=partition, offset=offset[0], timestamp=0, timestamp_type=0,
                key=row["key"].encode(), value=row["payload"].encode(), checksum=None,
                serialized_key_size=0, serialized_value_size=0, headers=(),
            ))  # fmt: skip
        fetches.append(list(partitions.values()))
    return fetches


async def _apply(consumer: EventConsumer, fetches: list[list[ConsumerRecord]]) -> None:
    for fetch in fetches:
        await asyncio.gather(*(consumer._handle_all(records) for records in fetch))


async def _check(runtime: Any, municipality: str, events: int) -> None:
    """What the applied events left: a case each, its routing decisions and referrals, their events."""
    async with runtime.engine.connect() as conn:
        counts = (await conn.execute(sa.text(
            "SELECT (SELECT count(*) FROM case_facts WHERE municipality = :m) AS cases, "
            "(SELECT count(*) FROM routing_decisions WHERE municipality = :m) AS decisions, "
            "(SELECT count(*) FROM referrals WHERE municipality = :m) AS referrals, "
            "(SELECT count(*) FROM outbox WHERE payload LIKE '%referral.created%' "
            " AND payload LIKE '%' || :m || '%') AS announced"
        ), {"m": municipality})).one()  # fmt: skip
    print(f"after {events} events: {counts.cases} cases, {counts.decisions} decisions, {counts.referrals} referrals, "
          f"{counts.announced} referral.created in the outbox")
    assert counts.cases == events and counts.referrals == counts.announced > 0, counts


def _report(events: int, wall: float, cpu: float, counted: Mapping[str, int], timed: Mapping[str, float]) -> None:
    print(f"{events} case.reported events: wall {1000 * wall / events:.2f} ms/event, "
          f"CPU {1000 * cpu / events:.2f} ms/event, "
          f"{sum(counted.values()) / events:.2f} statements/event")  # fmt: skip
    for text, count in sorted(counted.items(), key=lambda item: -item[1]):
        print(f"  {count / events:5.2f} × {1000 * timed[text] / count:6.2f} ms  {text}")


async def _profile(settings: Settings, events: int, html: str | None, plain: bool) -> None:
    from shared import db

    municipality = f"profr{os.getpid()}"
    statements: collections.Counter[str] = collections.Counter()
    seconds: collections.defaultdict[str, float] = collections.defaultdict(float)
    offset = [0]
    try:
        async with running_stack(settings, ("referral",)) as stack:
            runtime = stack.apps["referral"].state.runtime
            consumer = runtime.consumers[0]
            async with runtime.sessions() as session, session.begin():
                for kind in ("social_services", "police", "child_protection", "shelter", "health", "legal_aid"):
                    session.add(Member(id=uuid.uuid4(), municipality=municipality, name=f"{kind} office",
                                       kind=kind, services=[kind], active=True))  # fmt: skip

            @event.listens_for(runtime.engine.sync_engine, "before_cursor_execute")
            def _count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                statements[" ".join(statement.split())[:100]] += 1
                conn.info["began"] = time.perf_counter()

            @event.listens_for(runtime.engine.sync_engine, "after_cursor_execute")
            def _time(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                seconds[" ".join(statement.split())[:100]] += time.perf_counter() - conn.info.pop("began")

            await _apply(consumer, _records(settings, municipality, 200, offset))  # warm-up
            statements.clear()
            seconds.clear()
            measured = _records(settings, municipality, events, offset)
            wall, cpu = time.perf_counter(), time.process_time()
            await _apply(consumer, measured)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            counted = dict(statements)
            timed = dict(seconds)
            _report(events, wall, cpu, counted, timed)
            await _check(runtime, municipality, 200 + events)
            if plain:
                return
            profiled = _records(settings, municipality, events, offset)
            profiler = Profiler(async_mode="enabled", interval=0.0005)
            profiler.start()
            await _apply(consumer, profiled)
            profiler.stop()
            profiled = _records(settings, municipality, events, offset)
            cpu_profile = profiling.cpu_profiler()
            cpu_profile.enable()
            await _apply(consumer, profiled)
            cpu_profile.disable()
            print(profiler.output_text(unicode=True, color=False, show_all=False, short_mode=False))
            pstats.Stats(cpu_profile).sort_stats("tottime").print_stats(40)
            if html:
                Path(html).write_text(profiler.output_html())
    finally:
        await db.drop_database(settings, "referral")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.profile_referral")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--html")
    parser.add_argument("--plain", action="store_true", help="only the figures (to run under py-spy)")
    args = parser.parse_args()
    return profiling.run_profile(
        "profr", lambda settings: _profile(settings, args.events, args.html, args.plain)
    )


if __name__ == "__main__":
    raise SystemExit(main())
