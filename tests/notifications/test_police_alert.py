"""An expiring protection order names a survivor's case: it alerts the police member involved in the
case, not every police user of the municipality (issue #11)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from tests.notifications.conftest import FastStack
from tests.support import new_municipality, wait_for


async def test_expiring_order_alert_reaches_only_the_reporting_police_member(fast: FastStack) -> None:
    stack, town = fast.stack, new_municipality()
    now = datetime.now(UTC)
    case_id, reporter, bystander = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    await fast.produce(
        "intake",
        "case.reported",
        town,
        {"case_id": case_id, "case_number": "ELB-2026-00901", "risk_level": "low", "reported_by_role": "police",
         "reported_by_member_id": reporter},
    )  # fmt: skip

    async def involved() -> bool:
        engine = stack.apps["notifications"].state.runtime.engine
        async with engine.connect() as conn:
            found = await conn.scalar(
                sa.text("SELECT reporting_member_id FROM case_police WHERE case_id = :c"), {"c": case_id}
            )
        return found == reporter

    await wait_for(involved, timeout=15, what="the case's reporting police member")
    await fast.produce(
        "intake",
        "case.protection_order_recorded",
        town,
        {"case_id": case_id, "case_number": "ELB-2026-00901", "order_id": str(uuid.uuid4()), "kind": "protection",
         "status": "issued", "issued_at": now.isoformat(), "expires_at": (now + timedelta(days=3)).isoformat()},
    )  # fmt: skip

    async def alerts(headers: dict[str, str]) -> list[dict[str, Any]]:
        response = await stack.notifications.get("/v1/inbox", headers=headers)
        return [a for a in response.json()["items"] if a["type"] == "protection_order.expiring"]

    reporter_headers = stack.auth("police", town, member_id=reporter)
    [alert] = await wait_for(lambda: alerts(reporter_headers), timeout=15, what="the reporter's expiry alert")
    assert alert["case_id"] == case_id
    assert await alerts(stack.auth("coordinator", town))
    assert await alerts(stack.auth("police", town, member_id=bystander)) == []
    assert await alerts(stack.auth("police", town)) == []
