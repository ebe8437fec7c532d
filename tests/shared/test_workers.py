"""Several workers per service (`mkr serve` with MKR_WORKERS=2), as real processes on a database of their own:
one leader (the advisory lock) runs the relay and the jobs, a follower still serves and is ready, /metrics
sums both workers and passes promtool, kept-alive connections outlast a client pool's idle expiry, and when
the leader's process is killed the other takes over."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx
import pytest
from prometheus_client import multiprocess

from shared import db
from shared.leader import LOCK_CLASS, lock_key
from shared.settings import Settings
from tests.deploy.test_monitoring import run as promtool
from tests.processes import Served, serve_processes
from tests.support import wait_for

SERVICE = "intake"
T = TypeVar("T")


@dataclass
class Workers:
    served: Served
    conn: asyncpg.Connection  # on the workers' database
    metrics: Path  # their Prometheus multiprocess directory (mkr.cli.fresh_metrics_dir)


async def until(probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], *, timeout: float, what: str) -> T:
    """Poll `probe` (tests.support.wait_for) until `ok` holds for its value; that value."""
    seen: list[T] = []

    async def check() -> bool:
        seen.append(await probe())
        return ok(seen[-1])

    await wait_for(check, timeout=timeout, what=what)
    return seen[-1]


@pytest.fixture(scope="module")
async def workers(settings: Settings) -> AsyncIterator[Workers]:
    """One intake of two workers on a fresh database and topics (no in-process intake shares them)."""
    run = uuid.uuid4().hex[:6]
    own = settings.model_copy(update={"database_prefix": f"mkrw_{run}_", "kafka_topic_prefix": f"w{run}."})
    with serve_processes(own, SERVICE, 1, workers=2, extra_env={"MKR_LEADER_RETRY_SECONDS": "0.5"}) as served:
        async with httpx.AsyncClient(timeout=10) as http:

            async def ready() -> bool:
                try:
                    return (await http.get(f"{served[0].url}/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(ready, timeout=90, what="two intake workers ready")
        conn = await asyncpg.connect(**db.asyncpg_dsn(db.service_url(own, SERVICE)))  # type: ignore[arg-type]
        try:
            await until(lambda: _electors(conn), lambda pids: len(pids) == 2, timeout=60,
                        what="both workers in the election")
            metrics = settings.state_dir.resolve() / "metrics" / f"{SERVICE}-{served[0].port}"
            yield Workers(served[0], conn, metrics)
        finally:
            await conn.close()
    await db.drop_database(own, SERVICE)


async def _electors(conn: asyncpg.Connection) -> list[int]:
    """The worker pids with an election connection on the service's database."""
    rows = await conn.fetch(
        "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name LIKE $1", f"mkr-{SERVICE}-election:%"
    )
    return sorted(int(row["application_name"].rsplit(":", 1)[1]) for row in rows)


async def _leaders(conn: asyncpg.Connection) -> list[int]:
    """The worker pids holding the service's leader lock (granted; a follower never waits for it)."""
    rows = await conn.fetch(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database WHERE datname ="
        " current_database()) AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 2 AND l.granted",
        LOCK_CLASS, lock_key(SERVICE),
    )
    return [int(row["application_name"].rsplit(":", 1)[1]) for row in rows]


async def _relays(conn: asyncpg.Connection) -> int:
    """Connections LISTENing for the outbox relay (one per running relay)."""
    return int(await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
        f"mkr-{SERVICE}.outbox",
    ))


async def _roles(url: str, tries: int = 300) -> dict[int, str]:
    """/readyz on fresh connections until both workers answered (the kernel picks the worker): pid -> role."""
    seen: dict[int, str] = {}
    for _ in range(tries):
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"{url}/readyz")
        assert response.status_code == 200, response.text  # a follower is ready too
        body = response.json()
        seen[body["pid"]] = body["role"]
        if body["role"] == "follower":
            assert set(body["checks"]) == {"database", "broker"}  # the leader's relay and consumers are not its
        if len(seen) == 2:
            break
    return seen


def _sample(text: str, name: str, labels: dict[str, str]) -> float:
    """The value of one sample of the exposition, by exact labels (0 when absent)."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and dict(re.findall(r'(\w+)="([^"]*)"', match.group(1))) == labels:
            return float(match.group(2))
    return 0.0


async def test_metrics_of_two_workers_are_summed_and_pass_promtool(workers: Workers) -> None:
    requests = 120
    for _ in range(requests // 20):  # fresh connections, so both workers take some
        async with httpx.AsyncClient(timeout=10) as http:
            answers = await asyncio.gather(*(http.get(f"{workers.served.url}/v1/cases") for _ in range(20)))
        assert {a.status_code for a in answers} == {401}
    per_worker: dict[str, float] = {}
    for path in workers.metrics.glob("counter_*.db"):
        merged = multiprocess.MultiProcessCollector.merge([str(path)], accumulate=False)
        per_worker[path.name] = sum(
            s.value for m in merged for s in m.samples
            if s.name == "mkr_http_requests_total" and s.labels.get("route") == "/v1/cases"
            and s.labels.get("status") == "401"
        )
    assert len([n for n in per_worker.values() if n > 0]) == 2, per_worker  # both workers served some
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{workers.served.url}/metrics")
    assert response.status_code == 200
    promtool("check", "metrics", stdin=response.content)
    labels = {"service": SERVICE, "method": "GET", "route": "/v1/cases", "status": "401"}
    assert _sample(response.text, "mkr_http_requests_total", labels) == requests  # summed over both workers
    assert _sample(response.text, "mkr_worker_leader", {"service": SERVICE}) == 1


# Kept-alive connections. httpx's pool keeps an idle connection for `keepalive_expiry` (default 5 s) and
# reuses it until then; uvicorn closed idle connections after its own `timeout_keep_alive` (default 5 s)
# too, so a client reusing one near 5 s idle raced the server's close: ReadError (the server closed with
# the request unread) or RemoteProtocolError (it had closed), with no 500 and no worker restart. The
# server must keep idle connections open longer than its clients keep them (MKR_KEEP_ALIVE_SECONDS).
CLIENT_EXPIRY = 5.0  # httpx.Limits' default keepalive_expiry
NEAR_EXPIRY = [CLIENT_EXPIRY - 0.1 + i * 0.005 for i in range(20)]  # idle gaps 4.900 .. 4.995 s


def _local_port(response: httpx.Response) -> int:
    """The client's port of the connection that carried `response` (the same port: the same connection)."""
    stream = response.extensions["network_stream"]
    return int(stream.get_extra_info("client_addr")[1])


async def _reuse_after(url: str, gap: float, *, expiry: float | None, times: int) -> tuple[list[int], list[str]]:
    """One single-connection pool: a request, then `times` more, each after `gap` seconds idle; the local
    port of each answered request and the transport error of each failed one."""
    ports: list[int] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=1, keepalive_expiry=expiry)
    async with httpx.AsyncClient(timeout=10, limits=limits) as http:
        for attempt in range(times + 1):
            if attempt:
                await asyncio.sleep(gap)
            try:
                response = await http.get(f"{url}/readyz")  # any answer: the connection carried it
                ports.append(_local_port(response))
            except httpx.TransportError as exc:
                errors.append(f"after {gap:.5f} s idle: {type(exc).__name__}: {exc}")
    return ports, errors


async def test_a_pooled_client_reusing_connections_near_its_keepalive_expiry_never_finds_them_closed(
    workers: Workers,
) -> None:
    url = workers.served.url
    near = [_reuse_after(url, gap, expiry=CLIENT_EXPIRY, times=2) for gap in NEAR_EXPIRY]
    # A client that keeps idle connections longer than httpx (urllib3 has no expiry; a proxy's pool often
    # 60 s) still finds one idle past httpx's expiry open: the same connection, not a fresh one.
    beyond = _reuse_after(url, CLIENT_EXPIRY + 1, expiry=None, times=1)
    *answered, (beyond_ports, beyond_errors) = await asyncio.gather(*near, beyond)
    errors = [error for _, failed in answered for error in failed] + beyond_errors
    assert errors == [], errors  # every reuse found its connection open
    # The reuses happened (a client whose sleep overshot its expiry on a loaded machine opens a new one).
    assert sum(len(set(ports)) == 1 for ports, _ in answered) >= len(NEAR_EXPIRY) // 2, answered
    assert len(beyond_ports) == 2 and beyond_ports[0] == beyond_ports[1], beyond_ports  # not closed after 6 s


async def test_one_leader_runs_the_relay_and_a_follower_takes_over_when_it_is_killed(workers: Workers) -> None:
    served, conn = workers.served, workers.conn
    leaders = await _leaders(conn)
    electors = await _electors(conn)
    assert len(leaders) == 1 and leaders[0] in electors  # one of the two workers leads
    await until(lambda: _relays(conn), lambda n: n == 1, timeout=30, what="the leader's relay listening")
    roles = await _roles(served.url)
    assert sorted(roles.values()) == ["follower", "leader"], roles
    assert roles[leaders[0]] == "leader"

    os.kill(leaders[0], signal.SIGKILL)  # the server drops its connection, and with it the lock

    async def next_leader() -> list[int]:
        now = await _leaders(conn)
        assert len(now) <= 1, now  # never two holders
        return now

    taken = await until(next_leader, lambda now: len(now) == 1 and now[0] != leaders[0], timeout=60,
                        what="a follower taking over")
    assert taken[0] in electors  # the surviving worker, not the replacement the supervisor starts
    await until(lambda: _relays(conn), lambda n: n == 1, timeout=30, what="the new leader's relay")
    # The supervisor replaced the killed worker: two workers again, the new one a follower.
    await until(lambda: _electors(conn), lambda pids: len(pids) == 2 and leaders[0] not in pids, timeout=60,
                what="the killed worker replaced")
    assert await _leaders(conn) == taken
    roles = await _roles(served.url)
    assert sorted(roles.values()) == ["follower", "leader"], roles
