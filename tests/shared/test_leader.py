"""Leader election in one process, on the real server: two intake apps with MKR_LEADER_ELECTION on share a
database; one leads (relay, consumers, jobs), the other is a ready follower; a leader whose election
connection is cut steps down and one of them leads again (never both); and the pool of a worker is its share."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from shared import db
from shared.app import ServiceRuntime
from shared.db import pool_limits
from shared.leader import LOCK_CLASS, lock_key
from shared.settings import Settings
from tests.support import running_stack, wait_for


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, (8, 8)),  # one worker: as before workers
        ({"workers": 2}, (4, 4)),
        ({"workers": 4}, (2, 2)),
        ({"workers": 3, "db_connections": 20}, (3, 3)),
        ({"workers": 2, "db_connections": 12, "db_pool_size": 6, "db_max_overflow": 2}, (4, 2)),
        ({"workers": 2, "db_max_overflow": 0}, (4, 0)),
        ({"workers": 64}, (1, 1)),  # never under two a worker
    ],
)
def test_each_worker_pools_its_share_of_the_connections(values: dict[str, int], expected: tuple[int, int]) -> None:
    assert pool_limits(Settings(**values)) == expected  # type: ignore[arg-type]


def test_election_is_on_with_several_workers_unless_set() -> None:
    assert not Settings().elects_leader
    assert Settings(workers=2).elects_leader
    assert not Settings(workers=2, leader_election=False).elects_leader
    assert Settings(leader_election=True).elects_leader


async def _holders(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2"
        " AND objsubid = 2 AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        LOCK_CLASS, lock_key("intake"),
    ))


async def test_one_app_leads_the_other_follows_and_takes_over_when_the_lead_is_cut(settings: Settings) -> None:
    run = uuid.uuid4().hex[:6]
    own = settings.model_copy(update={
        "database_prefix": f"mkrl_{run}_", "kafka_topic_prefix": f"l{run}.", "leader_election": True,
        "leader_retry_seconds": 0.2,
    })
    try:
        async with running_stack(own, ("intake",)) as first, running_stack(own, ("intake",)) as second:
            one: ServiceRuntime = first.apps["intake"].state.runtime
            two: ServiceRuntime = second.apps["intake"].state.runtime
            assert (one.role, two.role) == ("leader", "follower")  # the first up leads at once
            assert len(one.consumers) == 1 and one.leader_tasks and two.consumers == [] and two.leader_tasks == []
            ready = await second.intake.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["role"] == "follower" and set(ready.json()["checks"]) == {"database", "broker"}
            assert (await first.intake.get("/readyz")).json()["role"] == "leader"

            conn = await asyncpg.connect(**db.asyncpg_dsn(db.service_url(own, "intake")))  # type: ignore[arg-type]
            try:
                assert await _holders(conn) == 1
                # The leader's election connection is cut (a network failure, a server restart).
                await conn.execute(
                    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l WHERE l.locktype = 'advisory'"
                    " AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 2 AND l.granted",
                    LOCK_CLASS, lock_key("intake"),
                )
                assert one.leadership is not None
                await wait_for(lambda: _true(one.leadership is not None and one.leadership.losses == 1),
                               timeout=30, what="the cut leader stepping down")

                async def settled() -> ServiceRuntime | None:
                    leaders = [r for r in (one, two) if r.is_leader]
                    return leaders[0] if len(leaders) == 1 and leaders[0].consumers else None

                leader = await wait_for(settled, timeout=30, what="one leader again")  # either may win the retry
                assert leader is not None
                follower = two if leader is one else one
                assert len(leader.consumers) == 1 and leader.leader_tasks
                assert follower.consumers == [] and follower.leader_tasks == [] and follower.role == "follower"
                assert await _holders(conn) == 1
            finally:
                await conn.close()
    finally:
        await db.drop_database(own, "intake")


async def _true(value: bool) -> bool:
    return value
