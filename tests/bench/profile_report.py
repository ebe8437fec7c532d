"""Profile intake's report path in-process: `python -m tests.bench.profile_report [--reports N] [--html FILE]`.

Starts intake alone (in this process, over httpx's ASGI transport, as the tests do) on the PostgreSQL of
MKR_DATABASE_URL (else an embedded one) and an embedded broker, posts the bench's reports one by one
(a police reporter with a member id, as `intake_throughput`), and prints:
- the SQL statements and round trips per report (every statement the engine sends, counted by the
  SQLAlchemy `before_cursor_execute` event; an `executemany` counts once) and each one's mean wall time,
- wall and CPU milliseconds per report (sequential, so wall = CPU + waiting on PostgreSQL),
- a pyinstrument profile of the reports (wall time, awaits included; `--html` for the interactive one),
- cProfile's functions by self time over another N reports (where the CPU goes).
The figures are per report on one connection: what one request costs, not a throughput.
"""

from __future__ import annotations

import argparse
import collections
import os
import pstats
import time
from pathlib import Path
from typing import Any

from pyinstrument import Profiler
from sqlalchemy import event

from shared.settings import Settings
from tests.bench import profiling
from tests.bench.scenarios import varied_report
from tests.support import running_stack


async def _profile(settings: Settings, reports: int, html: str | None) -> None:
    from shared import db

    municipality = f"prof{os.getpid()}"
    statements: collections.Counter[str] = collections.Counter()
    seconds: collections.Counter[str] = collections.Counter()  # wall time per statement (a round trip each)
    try:
        async with running_stack(settings, ("intake",)) as stack:
            engine = stack.apps["intake"].state.runtime.engine

            @event.listens_for(engine.sync_engine, "before_cursor_execute")
            def _count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                statements[" ".join(statement.split())[:90]] += 1
                conn.info["began"] = time.perf_counter()

            @event.listens_for(engine.sync_engine, "after_cursor_execute")
            def _time(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                seconds[" ".join(statement.split())[:90]] += time.perf_counter() - conn.info.pop("began")

            # The statements asyncpg runs itself (db.DriverStatement) pass no SQLAlchemy event: counted here.
            run = db.DriverStatement.run  # every driver statement, the key store's included

            async def counted(self: db.DriverStatement, driver: Any, params: Any) -> Any:
                text, began = " ".join(self.sql.split())[:90], time.perf_counter()
                try:
                    return await run(self, driver, params)
                finally:
                    statements[text] += 1
                    seconds[text] += time.perf_counter() - began

            db.DriverStatement.run = counted  # type: ignore[method-assign]
            headers = stack.auth("police", municipality, member_id="prof-police")

            async def post(i: int) -> None:
                response = await stack.intake.post("/v1/cases", json=varied_report(municipality, i), headers=headers)
                assert response.status_code == 201, response.text

            for i in range(30):  # warm-up: caches, prepared statements, a few earlier cases to match
                await post(i)
            statements.clear()
            seconds.clear()
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(30, 30 + reports):  # unprofiled: the figures per report
                await post(i)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            profiler = Profiler(async_mode="enabled", interval=0.0005)
            profiler.start()
            for i in range(30 + reports, 30 + 2 * reports):
                await post(i)
            profiler.stop()
            # Self CPU time by function (pyinstrument's tree is wall time): the process clock, not the wall.
            cpu_profile = profiling.cpu_profiler()
            cpu_profile.enable()
            for i in range(30 + 2 * reports, 30 + 3 * reports):
                await post(i)
            cpu_profile.disable()
            total = sum(statements.values()) / 3  # all three loops
            print(f"{reports} reports: wall {1000 * wall / reports:.2f} ms/report, "
                  f"CPU {1000 * cpu / reports:.2f} ms/report, {total / reports:.2f} statements/report")
            for text, count in statements.most_common():
                print(f"  {count / reports / 3:5.2f} × {1000 * seconds[text] / count:6.2f} ms  {text}")
            print(profiler.output_text(unicode=True, color=False, show_all=False, short_mode=False))
            stats = pstats.Stats(cpu_profile)
            profiling.print_layers(stats, reports)
            stats.sort_stats("tottime").print_stats(int(os.environ.get("MKR_PROFILE_ROWS", "35")))
            if os.environ.get("MKR_PROFILE_OURS"):  # cumulative CPU of our own functions
                stats.sort_stats("cumulative").print_stats(r"(services|shared)/", 40)
            if html:
                Path(html).write_text(profiler.output_html())
    finally:
        await db.drop_database(settings, "intake")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.profile_report")
    parser.add_argument("--reports", type=int, default=200)
    parser.add_argument("--html")
    args = parser.parse_args()
    return profiling.run_profile("prof", lambda settings: _profile(settings, args.reports, args.html))


if __name__ == "__main__":
    raise SystemExit(main())
