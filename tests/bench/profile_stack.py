"""The whole stack under intake's 32-client load, profiled: what BENCHMARKS.md's "what bounds intake" rests on.

    python -m tests.bench.profile_stack [--clients 32] [--seconds 8] [--py-spy intake,notifications]
                                        [--native] [--perf] [--out DIR]

`mkr run` as `make bench` starts it (one worker per service), restarted once with pg_stat_statements loaded (the
state directory's postgresql.conf); then wrk posts reports into one municipality (a 3 s warm-up, then the run)
while, if asked, py-spy samples the named services (raw collapsed stacks in DIR/<service>.txt, 97 Hz) and perf
samples the whole machine (DIR/perf.data: `perf report -i DIR/perf.data --sort pid -g none`). Printed: the rate,
each process group's CPU ms per report (/proc, as the bench), the services' top self frames from py-spy, and
the statements of each database by total time (pg_stat_statements over the run only). Needs Debian's wrk
(`make wrk`); perf only with --perf.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncpg

from shared.embedded import ensure_postgres
from tests.bench import reference
from tests.bench.scenarios import new_municipality
from tests.processes import LaunchedStack

SPY = Path(sys.executable).with_name("py-spy")

STATEMENTS_SQL = """
    SELECT d.datname AS database, s.calls, s.total_exec_time AS total_ms, s.mean_exec_time AS mean_ms,
           left(regexp_replace(s.query, '\\s+', ' ', 'g'), 100) AS query
    FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
    WHERE d.datname LIKE 'mkr_%' ORDER BY s.total_exec_time DESC LIMIT $1
"""


async def _on_server(state: Path, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(ensure_postgres(state))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def _with_pg_stat_statements(stack: LaunchedStack, output: Any) -> None:
    """Start the stack, stop it, load pg_stat_statements in its server's configuration and start it again."""
    stack.start(output=output)
    stack.stop()
    conf = stack.state / "pg" / "postgresql.conf"
    conf.write_text(
        conf.read_text() + "\nshared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = 'all'\n"
    )
    stack.proc = None
    stack.start(output=output)
    asyncio.run(_on_server(stack.state, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))


def self_frames(path: Path, top: int) -> list[tuple[float, str]]:
    """The frames py-spy found on top of the stack most often (raw collapsed format), as shares of its samples."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        counts[stack.split(";")[-1]] += int(count)
        total += int(count)
    return [(100 * n / total, frame) for frame, n in counts.most_common(top)] if total else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--py-spy", default="", help="services to sample, comma-separated (intake, referral, ...)")
    parser.add_argument("--native", action="store_true", help="py-spy --native (stops the process to sample it)")
    parser.add_argument("--perf", action="store_true", help="perf record -a over the run")
    parser.add_argument("--out", type=Path, default=None, help="where the profiles go (default: a new temp dir)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: make wrk")
    out = args.out or Path(tempfile.mkdtemp(prefix="mkr-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mkr-profile-stack-") as tmp:
        stack = LaunchedStack(state=Path(tmp) / "state")
        with (out / "stack.log").open("wb") as log:
            try:
                _with_pg_stat_statements(stack, log)
                _profile(stack, args, out)
            finally:
                if stack.proc is not None and stack.proc.poll() is None:
                    stack.stop()
    print(f"profiles in {out}")


def _profile(stack: LaunchedStack, args: argparse.Namespace, out: Path) -> None:
    pids = reference.service_pids(stack)
    municipality = new_municipality("prof")
    headers = stack.headers("police", municipality, "--member-id", "bench-police")
    url = stack.url("intake")
    reference.wrk_load(url, headers, municipality, args.clients, 3)  # warm-up: plans, pools, caches
    asyncio.run(_on_server(stack.state, "SELECT pg_stat_statements_reset()"))
    samplers = []
    seconds = str(int(args.seconds + 2))  # wrk's own 1 s warm-up, then the run
    for service in filter(None, args.py_spy.split(",")):
        command = [str(SPY), "record", "-p", str(pids[service]), "-d", seconds, "-r", "97", "--format", "raw",
                   "-o", str(out / f"{service}.txt")]  # fmt: skip
        command += ["--native"] if args.native else ["--nonblocking"]
        samplers.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    if args.perf:
        command = ["perf", "record", "-a", "-g", "-F", "199", "-o", str(out / "perf.data"), "--", "sleep", seconds]
        samplers.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        before = reference.stack_cpu_seconds(stack, pids)
        run = reference.wrk_load(url, headers, municipality, args.clients, args.seconds)
        after = reference.stack_cpu_seconds(stack, pids)
        for sampler in samplers:
            sampler.wait(timeout=float(seconds) + 60)
    finally:
        for sampler in samplers:  # a run that failed leaves no sampler behind
            if sampler.poll() is None:
                sampler.terminate()
    assert run is not None
    print(f"{args.clients} clients: {run['rate']:.1f} reports/s, p50 {run['summary']['p50_ms']} ms, "
          f"p99 {run['summary']['p99_ms']} ms, {run['errors']} errors")  # fmt: skip
    print("CPU ms per report:", reference.cpu_ms_per_report(before, after, run["made"]))
    for service in filter(None, args.py_spy.split(",")):
        path = out / f"{service}.txt"
        if path.exists():
            print(f"-- {service}: py-spy's top self frames")
            for share, frame in self_frames(path, 12):
                print(f"{share:5.1f} % {frame[:140]}")
    print("-- statements by total time (pg_stat_statements, the run only; mean includes lock waits)")
    for row in asyncio.run(_on_server(stack.state, STATEMENTS_SQL, 30)):
        print(f"{row['database'][:18]:18} {row['calls']:7} {row['total_ms']:10.1f} ms {row['mean_ms']:8.3f} ms"
              f"  {row['query']}")  # fmt: skip


if __name__ == "__main__":
    main()
