"""Shelter's projection of intake's cases, a batch at a time: the reports of cases no other event of the batch
names are kept in one statement, in a number of statements that does not grow with the batch, with the same
rows as one by one; a case another event names keeps the batch's order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from services.shelter.events import make_handler
from shared.events import Envelope, make_event
from tests.referral.helpers import reported
from tests.support import Stack, counting_consumer, new_municipality


async def test_a_batch_of_reports_is_projected_in_a_fixed_number_of_statements_and_in_order(stack: Stack) -> None:
    m = new_municipality()
    engine, statements, consumer = counting_consumer(
        stack.settings, "shelter", f"shelter.batch-{m}", make_handler(stack.settings)
    )

    def case_event(type_: str, data: dict[str, Any]) -> Envelope:
        return make_event(type_=type_, source="mkr/intake", subject=data["case_id"], municipality=m, data=data)

    def report(i: int) -> dict[str, Any]:
        return reported(m, needs=["shelter"] if i % 2 else ["legal_aid", "shelter"], children_count=i % 3)

    try:
        batches = [[report(i) for i in range(n)] for n in (3, 6)]
        counts = []
        for cases in batches:
            statements.clear()
            assert await consumer.apply_batch([case_event("case.reported", c) for c in cases]) == [True] * len(cases)
            counts.append(len(statements))
        # Reported then closed in one batch: closed (the batch's order). Reported again with a new number: the
        # newer number. Two more new cases beside them.
        closed, renumbered = report(1), batches[0][0]
        again = {**renumbered, "case_number": f"{renumbered['case_number']}-b"}
        closure = {"case_id": closed["case_id"], "case_number": closed["case_number"],
                   "closed_at": datetime.now(UTC).isoformat()}  # fmt: skip
        mixed = [case_event("case.reported", closed), case_event("case.closed", closure),
                 case_event("case.reported", again), *(case_event("case.reported", report(i)) for i in (4, 5))]
        assert await consumer.apply_batch(mixed) == [True] * 5  # fmt: skip
        async with engine.connect() as conn:
            found = await conn.execute(
                sa.text(
                    "SELECT case_id, case_number, needs, children_count, closed_at FROM case_projection "
                    "WHERE municipality = :m"
                ),
                {"m": m},
            )
            rows = {str(row.case_id): row for row in found}
    finally:
        await engine.dispose()
    # Inbox, the reports in one statement: the same for 3 cases as for 6.
    assert counts[0] == counts[1], statements
    expected = [c for cases in batches for c in cases] + [closed, *(e.data for e in mixed[3:])]
    assert len(rows) == len(expected)
    for case in expected:
        row = rows[case["case_id"]]
        assert row.needs == case["needs"] and row.children_count == case["children_count"]
    assert rows[renumbered["case_id"]].case_number == again["case_number"]
    assert rows[closed["case_id"]].closed_at is not None
    assert all(row.closed_at is None for case_id, row in rows.items() if case_id != closed["case_id"])
