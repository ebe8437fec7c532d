"""Gap-free case numbers across service processes: two `mkr serve --service intake` processes on one
database, 500 concurrent reports, some refused inside the transaction and some failing in its very last
statement (after the counter was bumped) — the municipality's numbers are exactly 1..N, no gap, no repeat.

The late failure is a trigger the test puts on `audit_log` for one caller (`sub`): it raises after the
chain trigger ran, inside the statement that also took the counter, so only a rollback of the whole
transaction keeps the counter gap-free. It is an injected fault (the service answers 500 for it, which is
the point: a database failure there must leave no trace); the trigger is dropped afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import httpx

from shared.db import asyncpg_dsn, service_url
from shared.embedded import free_port
from shared.settings import Settings
from tests.support import Stack, contract_report, new_municipality, wait_for

REPORTS = 500
FAIL_SUB = "gap-free-late-failure"
TRIGGER = f"""
CREATE OR REPLACE FUNCTION zz_test_fail_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.sub = '{FAIL_SUB}' THEN RAISE EXCEPTION 'injected failure after the counter'; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER zz_test_fail_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION zz_test_fail_audit();
"""


def service_env(settings: Settings) -> dict[str, str]:
    """The environment under which a separate process sees the same database, topics and keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MKR_")}
    env.update(
        {
            "MKR_ENVIRONMENT": settings.environment,
            "MKR_STATE_DIR": str(settings.state_dir),
            "MKR_DATABASE_URL": str(settings.database_url),
            "MKR_DATABASE_PREFIX": settings.database_prefix,
            "MKR_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "MKR_KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
            "MKR_KAFKA_ENABLE_IDEMPOTENCE": str(settings.kafka_enable_idempotence).lower(),
            "MKR_JWT_ISSUER": settings.jwt_issuer,
            "MKR_JWT_AUDIENCE": settings.jwt_audience,
            "MKR_DB_POOL_SIZE": "4",
            "MKR_DB_MAX_OVERFLOW": "4",
            "MKR_LOG_LEVEL": "WARNING",
        }
    )
    return env


@contextmanager
def intake_processes(settings: Settings, count: int) -> Iterator[list[str]]:
    """`count` intake services as child processes on the settings' database; yields their base URLs."""
    ports = [free_port() for _ in range(count)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mkr.cli", "serve", "--service", "intake", "--port", str(port)],
            env=service_env(settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


async def ready(http: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await http.get(f"{url}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


async def test_500_concurrent_reports_over_two_processes_number_1_to_n(intake: Stack) -> None:
    settings = intake.settings
    municipality = new_municipality()
    conn = await asyncpg.connect(**asyncpg_dsn(service_url(settings, "intake")))  # type: ignore[arg-type]
    await conn.execute(TRIGGER)
    try:
        with intake_processes(settings, 2) as urls:
            async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as http:
                for url in urls:
                    await wait_for(lambda url=url: ready(http, url), timeout=60, what=f"{url} ready")
                statuses = await post_reports(http, urls, intake, municipality)
        numbers = await conn.fetch(
            "SELECT case_number FROM cases WHERE municipality = $1 ORDER BY case_number", municipality
        )
        payloads = await conn.fetch(
            "SELECT payload FROM outbox WHERE payload LIKE '%' || $1 || '%'", f'"municipality":"{municipality}"'
        )
        counter = await conn.fetchval("SELECT last_seq FROM case_counters WHERE municipality = $1", municipality)
    finally:
        await conn.execute("DROP TRIGGER zz_test_fail_audit ON audit_log; DROP FUNCTION zz_test_fail_audit()")
        await conn.close()
    created = statuses.count(201)
    assert statuses.count(422) == REPORTS // 10  # refused inside the transaction (unknown risk question)
    assert statuses.count(500) == REPORTS // 10  # failed in the numbering statement itself
    assert created == REPORTS - 2 * (REPORTS // 10)
    seqs = [int(row["case_number"].rsplit("-", 1)[1]) for row in numbers]
    assert sorted(seqs) == list(range(1, created + 1))  # no gap, no repeat
    assert counter == created
    published = sorted(json.loads(row["payload"])["data"]["case_number"] for row in payloads)
    assert published == sorted(row["case_number"] for row in numbers)  # the events carry the real numbers


async def post_reports(http: httpx.AsyncClient, urls: list[str], stack: Stack, municipality: str) -> list[int]:
    """REPORTS reports at once, alternating between the processes; every 10th refused, every 10th failing late."""
    good = stack.auth("police", municipality, member_id="m-police")
    late = stack.auth("police", municipality, member_id="m-police", sub=FAIL_SUB)

    async def one(i: int) -> int:
        body = contract_report(municipality)
        headers = good
        if i % 10 == 3:
            body["risk_answers"] = {"no_such_question": True}
        elif i % 10 == 7:
            headers = late
        response = await http.post(f"{urls[i % len(urls)]}/v1/cases", json=body, headers=headers)
        return response.status_code

    return list(await asyncio.gather(*(one(i) for i in range(REPORTS))))
