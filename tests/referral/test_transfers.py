"""Referral's side of a transfer (`case.transferred`, CONTRACT §10): the projection moves, the sender's
open referrals end as `transferred`, routing runs by the receiver's rules — once, however often the
move is delivered."""

from __future__ import annotations

import asyncio
import io
import uuid
from csv import DictReader
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from tests.referral.helpers import add_member, produce, referrals_of, reported
from tests.support import Stack, new_municipality, wait_for


def transferred(data: dict[str, Any], sender: str, receiver: str) -> dict[str, Any]:
    """`case.transferred` data as intake publishes it: the coded facts again, both numbers, both sides."""
    return {
        **{k: v for k, v in data.items() if k != "case_number"},
        "case_number": f"KOR-2026-{uuid.uuid4().int % 10**5:05d}",
        "previous_case_number": data["case_number"],
        "transfer_id": str(uuid.uuid4()),
        "from_municipality": sender,
        "to_municipality": receiver,
        "accepted_at": datetime.now(UTC).isoformat(),
    }


async def _summary(stack: Stack, municipality: str) -> dict[str, Any]:
    today = datetime.now(UTC).date().isoformat()
    response = await stack.referral.get(
        "/v1/reports/summary",
        params={"municipality": municipality, "from": today, "to": today},
        headers=stack.auth("coordinator", municipality),
    )
    assert response.status_code == 200, response.text
    return dict(response.json()["cases"])


async def _plan_action(stack: Stack, municipality: str, case_id: str, member_id: str) -> str:
    """An ETN meeting held yesterday whose minutes gave the case an action due yesterday (overdue)."""
    coordinator = stack.auth("coordinator", municipality)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    meeting = await stack.referral.post(
        "/v1/etn-meetings",
        json={"municipality": municipality, "scheduled_for": yesterday.isoformat(), "case_ids": [case_id],
              "member_ids": [member_id]},
        headers=coordinator,
    )
    assert meeting.status_code == 201, meeting.text
    decision = {"case_id": case_id, "action": "monthly visit", "responsible_member_id": member_id,
                "due_date": yesterday.date().isoformat()}
    minutes = await stack.referral.post(
        f"/v1/etn-meetings/{meeting.json()['id']}/minutes",
        json={"attended_member_ids": [member_id], "decisions": [decision]},
        headers=coordinator,
    )
    assert minutes.status_code == 201, minutes.text
    plan = await stack.referral.get(f"/v1/cases/{case_id}/plan", headers=coordinator)
    [action] = plan.json()["actions"]
    return str(action["id"])


async def test_a_transfer_delivered_three_times_moves_the_case_once(stack: Stack, producer: AIOKafkaProducer) -> None:
    sender, receiver = new_municipality(), new_municipality()
    await add_member(stack, sender, "social_services")
    received_by = await add_member(stack, receiver, "social_services")
    data = reported(sender)
    await produce(producer, stack.settings, "case.reported", sender, data)
    [sent] = await referrals_of(stack, sender, data["case_id"], 1)
    action_id = await _plan_action(stack, sender, data["case_id"], sent["to_member_id"])

    move = transferred(data, sender, receiver)
    event = await produce(producer, stack.settings, "case.transferred", receiver, move)
    await produce(producer, stack.settings, "case.transferred", receiver, move, event=event)  # redelivered
    await produce(producer, stack.settings, "case.transferred", receiver, move)  # re-published, a new id
    [made] = await referrals_of(stack, receiver, data["case_id"], 1, timeout=20)
    assert made["to_member_id"] == received_by["id"] and made["case_number"] == move["case_number"]

    async def cancelled() -> dict[str, Any] | None:
        found = await stack.referral.get(f"/v1/referrals/{sent['id']}", headers=stack.auth("coordinator", sender))
        body = found.json()
        return body if body["status"] == "cancelled" else None

    ended = await wait_for(cancelled, timeout=20, what="the sender's referral cancelled")
    await asyncio.sleep(1.5)  # the later deliveries have been consumed too
    again = await stack.referral.get(f"/v1/referrals/{sent['id']}", headers=stack.auth("coordinator", sender))
    assert [h.get("reason") for h in again.json()["history"] if h["status"] == "cancelled"] == ["transferred"]
    assert ended["history"] == again.json()["history"]
    assert len(await referrals_of(stack, receiver, data["case_id"], 1)) == 1
    plan = await stack.referral.get(f"/v1/cases/{data['case_id']}/plan", headers=stack.auth("coordinator", receiver))
    assert [(a["id"], a["status"], a["overdue"]) for a in plan.json()["actions"]] == [(action_id, "cancelled", False)]

    # The case is the receiver's: her routing view and dashboard; the sender's is 404 and its dashboard empty.
    routing = await stack.referral.get(
        f"/v1/cases/{data['case_id']}/routing", headers=stack.auth("coordinator", receiver)
    )
    assert routing.status_code == 200
    gone = await stack.referral.get(f"/v1/cases/{data['case_id']}/routing", headers=stack.auth("coordinator", sender))
    assert gone.status_code == 404
    sender_cases, receiver_cases = await _summary(stack, sender), await _summary(stack, receiver)
    assert (sender_cases["total"], sender_cases["transferred_out"], sender_cases["transferred_in"]) == (1, 1, 0)
    assert (receiver_cases["total"], receiver_cases["transferred_out"], receiver_cases["transferred_in"]) == (0, 0, 1)
    csv = await stack.referral.get(
        "/v1/reports/cases.csv",
        params={"municipality": sender, "from": datetime.now(UTC).date().isoformat(),
                "to": datetime.now(UTC).date().isoformat()},
        headers=stack.auth("coordinator", sender),
    )
    assert csv.status_code == 200 and data["case_number"] in csv.text  # the number it was reported under
    [row] = [r for r in DictReader(io.StringIO(csv.text)) if r["case_number"] == data["case_number"]]
    assert (row["referrals"], row["referral_outcomes"]) == ("1", "social_services:cancelled")  # not the receiver's


async def test_a_case_that_moves_back_is_referred_again_by_its_first_municipality(
    stack: Stack, producer: AIOKafkaProducer
) -> None:
    sender, receiver = new_municipality(), new_municipality()
    social = await add_member(stack, sender, "social_services")
    await add_member(stack, receiver, "social_services")
    data = reported(sender)
    await produce(producer, stack.settings, "case.reported", sender, data)
    [first] = await referrals_of(stack, sender, data["case_id"], 1)
    away = transferred(data, sender, receiver)
    await produce(producer, stack.settings, "case.transferred", receiver, away)
    await referrals_of(stack, receiver, data["case_id"], 1, timeout=20)
    back = {**transferred({**data, "case_number": away["case_number"]}, receiver, sender),
            "case_number": f"ELB-2026-{uuid.uuid4().int % 10**5:05d}"}
    await produce(producer, stack.settings, "case.transferred", sender, back)

    async def referred_again() -> list[dict[str, Any]]:
        found = await stack.referral.get("/v1/referrals", params={"case_id": data["case_id"]},
                                         headers=stack.auth("coordinator", sender))
        return [r for r in found.json()["items"] if r["status"] == "pending" and r["id"] != first["id"]]

    [again] = await wait_for(referred_again, timeout=20, what="a new referral in the first municipality")
    assert again["to_member_id"] == social["id"] and again["case_number"] == back["case_number"]
    old = await stack.referral.get(f"/v1/referrals/{first['id']}", headers=stack.auth("coordinator", sender))
    assert old.json()["status"] == "cancelled"  # the first stays as it ended


async def test_a_transfer_of_a_case_never_seen_here_projects_it_from_the_event(
    stack: Stack, producer: AIOKafkaProducer
) -> None:
    sender, receiver = new_municipality(), new_municipality()
    member = await add_member(stack, receiver, "social_services")
    move = transferred(reported(sender), sender, receiver)
    await produce(producer, stack.settings, "case.transferred", receiver, move)
    [made] = await referrals_of(stack, receiver, move["case_id"], 1, timeout=20)
    assert made["to_member_id"] == member["id"]
    assert (await _summary(stack, sender))["transferred_out"] == 1


def test_the_national_summary_drops_every_municipality_condition_of_the_transfer_counts() -> None:
    from services.referral import reports, rollups

    # The case counts come from the rollups (services/referral/rollups.py) since h15lp.
    for statement in (reports.TRANSFERRED_IN, rollups.CASE_CELLS_ROLLUP, rollups.CASE_CELLS_ROWS, reports.CASE_ROWS):
        assert ":m" not in reports._national(statement.text).text, statement.text
