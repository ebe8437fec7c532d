"""The intake bench's plain reference, its load generator in a process of its own, and CPU per report.

Plain reference (issue #16): what PostgreSQL itself commits when each report is one transaction of three
inserts — a case row with ~1 KB of JSON, a person row (the survivor index), an outbox row — over asyncpg,
with no counter, no duplicate search, no audit chain. The HTTP rate is reported as a share of it.

The HTTP load runs in a child process (spawned, its own event loop), so the bench's own work does not
slow the clients; the services' CPU time is read from /proc/<pid>/stat (utime + stime) around the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from typing import Any

import asyncpg
import psutil

from shared.events import INTAKE_TOPIC
from shared.settings import Settings
from tests.processes import SERVICES, LaunchedStack

PLAIN_CASE_SQL = (
    "INSERT INTO cases (id, municipality, case_number, status, risk_level, source, facts, personal, reported_at, "
    "reported_by_sub, reported_by_role, reported_by_member_id, created_at) "
    "VALUES ($1, $2, $3, 'open', 'low', 'police', $4::jsonb, $5, $6, 'bench-plain', 'police', NULL, $6)"
)
PLAIN_PERSON_SQL = (
    "INSERT INTO survivor_index (case_id, municipality, name_keys, birth_year, birth_date_key) "
    "VALUES ($1, $2, $3, 1991, NULL)"
)
PLAIN_OUTBOX_SQL = "INSERT INTO outbox (event_id, topic, key, payload) VALUES ($1, $2, $3, $4)"
FACTS = {
    "sex": "female",
    "age": 35,
    "age_group": "25-39",
    "violence_types": ["physical", "psychological"],
    "needs": ["legal_aid", "shelter"],
    "notes": "x" * 800,  # pads the row's JSON to about 1 KB
}
NAME_KEYS = [f"k{n:02d}" for n in range(12)]


class PlainReport:
    """One report as three inserts in one transaction, nothing else."""

    def __init__(self, settings: Settings, municipality: str) -> None:
        self.municipality = municipality
        self.topic = settings.topic(INTAKE_TOPIC)
        self.facts = json.dumps(FACTS)
        self.personal = "p" * 300  # the size of a sealed identity

    async def report(self, conn: asyncpg.Connection, i: int) -> None:
        case_id, now = uuid.uuid4(), datetime.now(UTC)
        payload = json.dumps({"type": "case.reported", "case_id": str(case_id), "facts": FACTS})
        async with conn.transaction():
            await conn.execute(PLAIN_CASE_SQL, case_id, self.municipality, case_id.hex, self.facts, self.personal, now)
            await conn.execute(PLAIN_PERSON_SQL, case_id, self.municipality, NAME_KEYS)
            await conn.execute(PLAIN_OUTBOX_SQL, uuid.uuid4(), self.topic, str(case_id), payload)


# --- CPU per service -----------------------------------------------------------------------------------------


def service_pids(stack: LaunchedStack) -> dict[str, int]:
    """The launcher's service processes (`mkr serve --service <name>`), by name."""
    assert stack.proc is not None
    found: dict[str, int] = {}
    for child in psutil.Process(stack.proc.pid).children(recursive=True):
        try:
            cmdline = child.cmdline()
        except psutil.Error:
            continue
        for name in SERVICES:
            if "serve" in cmdline and name in cmdline:
                found[name] = child.pid
    return found


def infrastructure_pids(stack: LaunchedStack) -> dict[str, list[int]]:
    """The embedded PostgreSQL (postmaster and backends) and broker processes of the stack, by name: their
    CPU per report completes the budget of the two cores (empty when the stack uses an external server).
    Also "PostgreSQL <service>": the backends connected to that service's database (part of "PostgreSQL")."""
    assert stack.proc is not None
    groups: dict[str, list[int]] = {"PostgreSQL": [], "broker": []}
    data_dir = str(stack.state / "pg")
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and "-D" in cmdline and data_dir in cmdline:
            backends = proc.children()
            groups["PostgreSQL"] = [proc.pid, *(child.pid for child in backends)]
            for child in backends:  # also by database: a backend's title is "postgres: <user> <database> ..."
                with contextlib.suppress(psutil.Error, IndexError):
                    title = child.cmdline()[0].split()
                    if len(title) > 2 and title[0] == "postgres:" and title[2].startswith("mkr_"):
                        groups.setdefault(f"PostgreSQL {title[2].removeprefix('mkr_')}", []).append(child.pid)
    for child in psutil.Process(stack.proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "tansu" in child.name() or any("tansu" in part for part in child.cmdline()[:1]):
                groups["broker"].append(child.pid)
    return {name: pids for name, pids in groups.items() if pids}


def group_cpu_seconds(groups: dict[str, list[int]]) -> dict[str, float]:
    """Each group's summed utime + stime (a process gone meanwhile counts nothing)."""
    total: dict[str, float] = {}
    for name, pids in groups.items():
        seconds = 0.0
        for pid in pids:
            with contextlib.suppress(OSError):
                seconds += cpu_seconds(pid)
        total[name] = seconds
    return total


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat (fields 14 and 15, after the command's parentheses)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def stack_cpu_seconds(stack: LaunchedStack, pids: dict[str, int]) -> dict[str, float]:
    """Each service process's CPU seconds and each infrastructure group's (`infrastructure_pids`, read now: the
    server's backends come and go), for `cpu_ms_per_report` over a run."""
    return {**cpu_snapshot(pids), **group_cpu_seconds(infrastructure_pids(stack))}


def cpu_ms_per_report(before: dict[str, float], after: dict[str, float], reports: int) -> dict[str, float]:
    return {name: round(1000 * (after[name] - before[name]) / max(reports, 1), 2) for name in before}


# --- the HTTP load in a process of its own ----------------------------------------------------------------


def _http_load(
    url: str, headers: dict[str, str], municipality: str, concurrency: int, seconds: float
) -> dict[str, Any]:
    """In the child: a closed loop of POST /v1/cases; the rate, latency summary, errors, every 201 made and the
    child's own CPU seconds over the loop (the load generator's share of the cores)."""
    import time

    import httpx

    from tests.bench.harness import closed_loop
    from tests.bench.scenarios import varied_report

    async def run() -> dict[str, Any]:
        made = 0
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:

            async def report(i: int) -> bool:
                nonlocal made
                response = await http.post(f"{url}/v1/cases", json=varied_report(municipality, i), headers=headers)
                made += response.status_code == 201
                return response.status_code == 201

            cpu = time.process_time()
            recorder, rate = await closed_loop(report, concurrency=concurrency, seconds=seconds)
            cpu = time.process_time() - cpu
        return {"rate": rate, "summary": recorder.summary_ms(), "errors": recorder.errors, "made": made, "cpu_s": cpu,
                "generator": "httpx"}

    return asyncio.run(run())


# Debian's wrk, with bodies read from a file and its summary written as one JSON line (latencies in µs).
WRK_SCRIPT = """
local bodies, at = {}, 0
function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  at = tonumber(args[2])
end
function request()
  at = at % #bodies + 1
  return wrk.format("POST", "/v1/cases", nil, bodies[at])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'MKR {"requests": %d, "duration_us": %d, "status": %d, "socket": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""
WRK_WARMUP_BODIES = 1000  # bodies the 1 s warm-up may use; the measured run starts after them


def _wrk_run(wrk: str, url: str, headers: dict[str, str], files: tuple[str, str], offset: int, concurrency: int,
             seconds: float) -> dict[str, Any]:
    import subprocess

    flags = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    done = subprocess.run(
        [wrk, "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "60s", "-s", files[0],
         "-H", "Content-Type: application/json", *flags, url, "--", files[1], str(offset)],
        capture_output=True, text=True, timeout=seconds + 120, check=True,
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("MKR "))
    return dict(json.loads(line[4:]))


def wrk_load(url: str, headers: dict[str, str], municipality: str, concurrency: int, seconds: float,
             ) -> dict[str, Any] | None:
    """The closed loop of `_http_load` driven by Debian's wrk (C, one thread): a 1 s warm-up, then the run;
    the same result keys, and wrk's own CPU seconds (its rusage as a child). None when wrk is not installed."""
    import resource
    import shutil
    import tempfile

    from tests.bench.scenarios import varied_report

    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    with tempfile.TemporaryDirectory(prefix="mkr-wrk-") as tmp:
        script, bodies = os.path.join(tmp, "report.lua"), os.path.join(tmp, "bodies.jsonl")
        with open(script, "w") as handle:
            handle.write(WRK_SCRIPT)
        with open(bodies, "w") as handle:  # enough distinct reports for 400 a second, warm-up included
            for i in range(WRK_WARMUP_BODIES + int(400 * seconds)):
                handle.write(json.dumps(varied_report(municipality, i)) + "\n")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        warm = _wrk_run(wrk, f"{url}/v1/cases", headers, (script, bodies), 0, concurrency, 1)
        run = _wrk_run(wrk, f"{url}/v1/cases", headers, (script, bodies), WRK_WARMUP_BODIES, concurrency, seconds)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    made = sum(r["requests"] - r["status"] for r in (warm, run))
    return {
        "rate": (run["requests"] - run["status"]) / (run["duration_us"] / 1e6),
        "summary": {"p50_ms": round(run["p50_us"] / 1000, 2), "p99_ms": round(run["p99_us"] / 1000, 2)},
        "errors": run["status"] + run["socket"], "made": made, "generator": "wrk",
        # wrk's CPU over both runs, per report made in both (as the services' CPU is counted)
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
    }


async def http_load_in_child(
    url: str, headers: dict[str, str], municipality: str, concurrency: int, seconds: float
) -> dict[str, Any]:
    """`_http_load` in a spawned child process (its own interpreter and event loop)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        future = pool.submit(_http_load, url, headers, municipality, concurrency, seconds)
        return await asyncio.wrap_future(future)
