"""`rent_bonus.payment_due` and `rent_bonus.ending`: each raised exactly once, across scans and replicas."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Any

from services.shelter import domain
from services.shelter.config import ShelterConfig
from services.shelter.scheduler import raise_due
from tests.shelter.helpers import outbox_events
from tests.shelter.test_rent_bonus import apply, approval, decide, officer, set_budget
from tests.support import Stack, new_municipality, running_stack, wait_for


def _month(offset: int) -> date:
    return domain.add_months(date.today().replace(day=1), offset)


async def _approve(stack: Stack, m: str, start: date, months: int) -> dict[str, Any]:
    for year in {d.year for d in domain.payment_months(start, months)}:
        await set_budget(stack, m, year, "1000000.00")
    app = await apply(stack, m)
    response = await decide(stack, m, app["id"], approval(domain.format_month(start), months, "10000.00"))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _due_events(stack: Stack, application_id: str) -> list[dict[str, Any]]:
    return await outbox_events(stack, "rent_bonus.payment_due", application_id=application_id)


async def test_two_replicas_raise_each_due_payment_and_ending_once(stack: Stack) -> None:
    m = new_municipality()
    past = await _approve(stack, m, _month(-2), 3)  # months -2, -1, 0: all started; ends this month
    future = await _approve(stack, m, _month(0), 4)  # only this month has started; ends in 3 months
    config = ShelterConfig(scan_seconds=0.1)
    options = {"shelter": {"config": config}}
    async with (
        running_stack(stack.settings, ("shelter",), options),
        running_stack(stack.settings, ("shelter",), options),
    ):

        async def raised() -> bool:
            return len(await _due_events(stack, past["id"])) >= 3 and len(await _due_events(stack, future["id"])) >= 1

        await wait_for(raised, timeout=15, what="payment_due events")
        await asyncio.sleep(1.0)  # many more scans by both replicas
    due_past = await _due_events(stack, past["id"])
    assert sorted(e["data"]["payment_id"] for e in due_past) == sorted(p["id"] for p in past["payments"])
    assert all(e["data"]["amount"] == "10000.00" for e in due_past)
    due_future = await _due_events(stack, future["id"])
    assert [e["data"]["month"] for e in due_future] == [domain.format_month(_month(0))]
    ending = await outbox_events(stack, "rent_bonus.ending", application_id=past["id"])
    assert len(ending) == 1 and ending[0]["data"]["last_month"] == domain.format_month(_month(0))
    assert await outbox_events(stack, "rent_bonus.ending", application_id=future["id"]) == []


async def test_racing_scans_raise_each_item_once(stack: Stack) -> None:
    m = new_municipality()
    app = await _approve(stack, m, _month(-3), 4)
    runtime = stack.apps["shelter"].state.runtime
    config = ShelterConfig()
    await asyncio.gather(*(raise_due(runtime.sessions, runtime.settings, config) for _ in range(8)))
    assert len(await _due_events(stack, app["id"])) == 4
    assert len(await outbox_events(stack, "rent_bonus.ending", application_id=app["id"])) == 1
    await raise_due(runtime.sessions, runtime.settings, config)  # a restart scans again: nothing new
    assert len(await _due_events(stack, app["id"])) == 4


async def test_paid_payments_are_not_raised_as_due(stack: Stack) -> None:
    m = new_municipality()
    app = await _approve(stack, m, _month(-1), 2)
    first = app["payments"][0]["id"]
    paid = await stack.shelter.post(f"/v1/rent-bonus/payments/{first}/pay", headers=officer(stack, m))
    assert paid.status_code == 200
    runtime = stack.apps["shelter"].state.runtime
    await raise_due(runtime.sessions, runtime.settings, ShelterConfig())
    assert [e["data"]["payment_id"] for e in await _due_events(stack, app["id"])] == [app["payments"][1]["id"]]


async def test_ending_is_raised_thirty_days_before_the_last_month(stack: Stack) -> None:
    m = new_municipality()
    app = await _approve(stack, m, _month(6), 3)
    last = domain.parse_month(app["payments"][-1]["month"])
    runtime = stack.apps["shelter"].state.runtime
    config = ShelterConfig(ending_notice_days=30)
    await raise_due(runtime.sessions, runtime.settings, config, today=last - timedelta(days=31), municipality=m)
    assert await outbox_events(stack, "rent_bonus.ending", application_id=app["id"]) == []
    await raise_due(runtime.sessions, runtime.settings, config, today=last - timedelta(days=30), municipality=m)
    ending = await outbox_events(stack, "rent_bonus.ending", application_id=app["id"])
    assert len(ending) == 1 and ending[0]["data"]["last_month"] == domain.format_month(last)
    # Only months that had started by that day were raised as due; the last one had not.
    due = [domain.parse_month(e["data"]["month"]) for e in await _due_events(stack, app["id"])]
    assert due and all(month <= last - timedelta(days=30) for month in due)
