"""The bench's same-statements ceiling (tests/bench/database.py) sends intake's own report statements with
its own positional parameters: run once against a real intake database, so a statement that gains a parameter
in the service cannot leave `make bench` failing unnoticed."""

from __future__ import annotations

import asyncpg

from shared.db import asyncpg_dsn, service_url
from tests.bench.database import CeilingReport
from tests.support import Stack, new_municipality


async def test_the_ceiling_report_writes_numbered_cases_with_the_services_statements(intake: Stack) -> None:
    municipality = new_municipality()
    ceiling = CeilingReport(intake.settings, municipality)
    conn = await asyncpg.connect(**asyncpg_dsn(service_url(intake.settings, "intake")))  # type: ignore[arg-type]
    try:
        for i in range(3):
            await ceiling.report(conn, i)
        numbers = await conn.fetch(
            "SELECT case_number FROM cases WHERE municipality = $1 ORDER BY case_number", municipality
        )
        audited = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE municipality = $1 AND action = 'case.reported'", municipality
        )
    finally:
        await conn.close()
    assert [row["case_number"].rsplit("-", 1)[1] for row in numbers] == ["00001", "00002", "00003"]
    assert audited == 3
