"""Gap-free case numbers across service processes: two `mkr serve --service intake` processes on one
database, or one with two workers (MKR_WORKERS=2); 500 concurrent reports, some refused inside the
transaction and some failing in its very last statement (after the counter was bumped) — the
municipality's numbers are exactly 1..N, no gap, no repeat.

The late failure is a trigger the test puts on `audit_log` for one caller (`sub`): it raises after the
chain trigger ran, inside the statement that also took the counter, so only a rollback of the whole
transaction keeps the counter gap-free. It is an injected fault (the service answers 500 for it, which is
the point: a database failure there must leave no trace); the trigger is dropped afterwards.
"""

from __future__ import annotations

import asyncio
import json

import asyncpg
import httpx
import pytest

from shared.db import asyncpg_dsn, service_url
from tests.processes import serve_processes
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


async def ready(http: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await http.get(f"{url}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.timeout(300)  # each variant takes 70-120 s on a loaded two-core machine; the default is 120
@pytest.mark.parametrize(("processes", "workers"), [(2, 1), (1, 2)], ids=["two-processes", "two-workers"])
async def test_500_concurrent_reports_over_two_processes_number_1_to_n(
    intake: Stack, processes: int, workers: int
) -> None:
    settings = intake.settings
    municipality = new_municipality()
    conn = await asyncpg.connect(**asyncpg_dsn(service_url(settings, "intake")))  # type: ignore[arg-type]
    await conn.execute(TRIGGER)
    try:
        with serve_processes(settings, "intake", processes, workers) as served:
            urls = [one.url for one in served]
            # Pooled, kept-alive connections, as an integrator's client keeps them (RELIABILITY.md, keep-alive).
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(timeout=60, limits=limits) as http:
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
