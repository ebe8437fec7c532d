"""Placements take beds atomically, never overbook, and show case numbers and needs — never names."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from services.shelter.config import ShelterConfig
from tests.shelter.helpers import (
    outbox_events,
    placement_body,
    register,
    report_case,
    send_intake_event,
    staff,
    wait_projected,
)
from tests.support import Stack, new_municipality, running_stack, wait_for


async def _free_beds(stack: Stack, m: str, sid: str) -> int:
    response = await stack.shelter.get(f"/v1/shelters/{sid}", headers=stack.auth("coordinator", m))
    return int(response.json()["free_beds"])


async def test_placement_takes_adults_and_children_beds(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m, capacity=5))["id"]
    response = await stack.shelter.post(
        "/v1/placements", json=placement_body(sid, adults=1, children=2), headers=staff(stack, m, sid)
    )
    assert response.status_code == 201, response.text
    placement = response.json()
    assert placement["active"] is True and placement["adults"] == 1 and placement["children"] == 2
    assert await _free_beds(stack, m, sid) == 2
    started = await outbox_events(stack, "placement.started", placement_id=placement["id"])
    assert started[0]["data"]["adults"] == 1 and started[0]["data"]["children"] == 2
    assert started[0]["municipality"] == m
    changed = await outbox_events(stack, "shelter.availability_changed", shelter_id=sid, free_beds=2)
    assert changed


async def test_too_few_free_beds_is_409(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m, capacity=2))["id"]
    response = await stack.shelter.post(
        "/v1/placements", json=placement_body(sid, adults=1, children=2), headers=stack.auth("coordinator", m)
    )
    assert response.status_code == 409
    assert response.json()["type"].endswith("no-free-bed")
    assert await _free_beds(stack, m, sid) == 2


async def test_children_are_refused_where_not_accepted(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m, accepts_children=False))["id"]
    response = await stack.shelter.post(
        "/v1/placements", json=placement_body(sid, children=1), headers=stack.auth("coordinator", m)
    )
    assert response.status_code == 409
    assert response.json()["type"].endswith("children-not-accepted")
    adults_only = await stack.shelter.post(
        "/v1/placements", json=placement_body(sid), headers=stack.auth("coordinator", m)
    )
    assert adults_only.status_code == 201


async def test_taking_the_last_bed_publishes_shelter_full(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m, capacity=2))["id"]
    response = await stack.shelter.post(
        "/v1/placements", json=placement_body(sid, adults=2), headers=stack.auth("coordinator", m)
    )
    assert response.status_code == 201
    assert len(await outbox_events(stack, "shelter.full", shelter_id=sid)) == 1


async def test_twenty_concurrent_placements_for_five_beds_exactly_five_win(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m, capacity=5))["id"]
    headers = staff(stack, m, sid)
    responses = await asyncio.gather(
        *(stack.shelter.post("/v1/placements", json=placement_body(sid), headers=headers) for _ in range(20))
    )
    codes = sorted(r.status_code for r in responses)
    assert codes.count(201) == 5, codes
    assert codes.count(409) == 15, codes
    assert await _free_beds(stack, m, sid) == 0
    listed = await stack.shelter.get("/v1/placements", params={"shelter_id": sid, "active": "true"}, headers=headers)
    assert len(listed.json()["items"]) == 5
    assert len(await outbox_events(stack, "placement.started", shelter_id=sid)) == 5
    assert len(await outbox_events(stack, "shelter.full", shelter_id=sid)) == 1


async def test_the_database_refuses_negative_or_excess_free_beds(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m, capacity=3))["id"]
    engine = stack.apps["shelter"].state.runtime.engine
    for value in (-1, 4):
        with pytest.raises(IntegrityError, match="ck_shelters_free_beds_range"):
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text("UPDATE shelters SET free_beds = :v WHERE id = :id"), {"v": value, "id": uuid.UUID(sid)}
                )


async def test_discharge_frees_the_beds_once(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m, capacity=4))["id"]
    headers = staff(stack, m, sid)
    placed = (
        await stack.shelter.post("/v1/placements", json=placement_body(sid, adults=1, children=1), headers=headers)
    ).json()
    assert await _free_beds(stack, m, sid) == 2
    response = await stack.shelter.post(
        f"/v1/placements/{placed['id']}/discharge", json={"reason": "moved_on"}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["active"] is False and response.json()["ended_at"]
    assert await _free_beds(stack, m, sid) == 4
    again = await stack.shelter.post(
        f"/v1/placements/{placed['id']}/discharge", json={"reason": "moved_on"}, headers=headers
    )
    assert again.status_code == 409
    assert await _free_beds(stack, m, sid) == 4
    ended = await outbox_events(stack, "placement.ended", placement_id=placed["id"])
    assert len(ended) == 1 and ended[0]["data"]["reason"] == "moved_on"


async def test_free_text_discharge_reason_stays_out_of_events(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m))["id"]
    headers = stack.auth("coordinator", m)
    placed = (await stack.shelter.post("/v1/placements", json=placement_body(sid), headers=headers)).json()
    reason = "She went to her sister in Durrës"
    response = await stack.shelter.post(
        f"/v1/placements/{placed['id']}/discharge", json={"reason": reason}, headers=headers
    )
    assert response.json()["end_reason"] == reason
    ended = await outbox_events(stack, "placement.ended", placement_id=placed["id"])
    assert ended[0]["data"]["reason"] == "other"


async def test_discharge_never_lifts_free_beds_above_capacity(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m, capacity=3))["id"]
    headers = staff(stack, m, sid)
    placed = (await stack.shelter.post("/v1/placements", json=placement_body(sid, adults=2), headers=headers)).json()
    etag = (await stack.shelter.get(f"/v1/shelters/{sid}", headers=headers)).headers["etag"]
    # Staff count the beds free already (the family left before the discharge was recorded).
    put = await stack.shelter.put(
        f"/v1/shelters/{sid}/availability", json={"free_beds": 3}, headers={**headers, "If-Match": etag}
    )
    assert put.status_code == 200
    response = await stack.shelter.post(
        f"/v1/placements/{placed['id']}/discharge", json={"reason": "other"}, headers=headers
    )
    assert response.status_code == 200
    assert await _free_beds(stack, m, sid) == 3


async def test_placements_show_case_number_and_needs_from_intake_never_names(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m))["id"]
    case = await report_case(stack, m, needs=["shelter", "psychological"])
    placed = await stack.shelter.post(
        "/v1/placements", json=placement_body(sid, case["case_id"]), headers=staff(stack, m, sid)
    )
    assert placed.status_code == 201
    shown = await wait_projected(stack, case["case_id"], m, sid)
    assert shown["case_number"] == case["case_number"]
    assert shown["needs"] == ["shelter", "psychological"]
    listed = await stack.shelter.get(
        "/v1/placements", params={"case_id": case["case_id"]}, headers=staff(stack, m, sid)
    )
    text = listed.text
    for personal in ("first_name", "last_name", "name", "address", "phone", "date_of_birth"):
        assert f'"{personal}"' not in text
    # Once projected, new events carry the case number too.
    again = await stack.shelter.post(
        "/v1/placements", json=placement_body(sid, case["case_id"]), headers=staff(stack, m, sid)
    )
    started = await outbox_events(stack, "placement.started", placement_id=again.json()["id"])
    assert started[0]["data"]["case_number"] == case["case_number"]


async def test_a_case_of_another_municipality_is_404(stack: Stack) -> None:
    m, elsewhere = new_municipality(), new_municipality()
    sid = (await register(stack, m))["id"]
    foreign = await report_case(stack, elsewhere)
    other_sid = (await register(stack, elsewhere))["id"]
    await stack.shelter.post(
        "/v1/placements",
        json=placement_body(other_sid, foreign["case_id"]),
        headers=stack.auth("coordinator", elsewhere),
    )
    await wait_projected(stack, foreign["case_id"], elsewhere, other_sid)
    response = await stack.shelter.post(
        "/v1/placements", json=placement_body(sid, foreign["case_id"]), headers=stack.auth("coordinator", m)
    )
    assert response.status_code == 404


async def test_unknown_case_is_409_projection_behind_when_the_projection_is_required(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m))["id"]
    config = ShelterConfig(require_known_case=True)
    async with running_stack(stack.settings, ("shelter",), {"shelter": {"config": config}}) as strict:
        headers = strict.auth("coordinator", m)
        unknown = await strict.shelter.post("/v1/placements", json=placement_body(sid), headers=headers)
        # Not 404: the case may exist and intake's event be on its way (shared/projection.py).
        assert unknown.status_code == 409 and unknown.headers["retry-after"] == "2"
        assert unknown.json()["type"] == "https://mkr.al/problems/projection-behind"
        case = await report_case(strict, m)

        async def known() -> bool:
            response = await strict.shelter.post(
                "/v1/placements", json=placement_body(sid, case["case_id"]), headers=headers
            )
            return response.status_code == 201

        await wait_for(known, timeout=20, what="the case projection")


async def test_staff_see_and_change_only_their_own_shelters_placements(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m))["id"]
    other = (await register(stack, m))["id"]
    coordinator = stack.auth("coordinator", m)
    mine = (await stack.shelter.post("/v1/placements", json=placement_body(sid), headers=coordinator)).json()
    theirs = (await stack.shelter.post("/v1/placements", json=placement_body(other), headers=coordinator)).json()
    headers = staff(stack, m, sid)
    listed = await stack.shelter.get("/v1/placements", headers=headers)
    assert [p["id"] for p in listed.json()["items"]] == [mine["id"]]
    foreign = await stack.shelter.get("/v1/placements", params={"shelter_id": other}, headers=headers)
    assert foreign.json() == {"items": [], "next_cursor": None}
    assert (await stack.shelter.get(f"/v1/placements/{theirs['id']}", headers=headers)).status_code == 404
    discharge = await stack.shelter.post(
        f"/v1/placements/{theirs['id']}/discharge", json={"reason": "other"}, headers=headers
    )
    assert discharge.status_code == 404
    placing = await stack.shelter.post("/v1/placements", json=placement_body(other), headers=headers)
    assert placing.status_code == 403
    everything = await stack.shelter.get("/v1/placements", headers=coordinator)
    assert {p["id"] for p in everything.json()["items"]} == {mine["id"], theirs["id"]}


async def test_placement_list_filters_by_case_and_active(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m))["id"]
    headers = stack.auth("coordinator", m)
    case_id = str(uuid.uuid4())
    first = (await stack.shelter.post("/v1/placements", json=placement_body(sid, case_id), headers=headers)).json()
    second = (await stack.shelter.post("/v1/placements", json=placement_body(sid), headers=headers)).json()
    await stack.shelter.post(f"/v1/placements/{first['id']}/discharge", json={"reason": "other"}, headers=headers)
    by_case = await stack.shelter.get("/v1/placements", params={"case_id": case_id}, headers=headers)
    assert [p["id"] for p in by_case.json()["items"]] == [first["id"]]
    active = await stack.shelter.get("/v1/placements", params={"active": "true"}, headers=headers)
    assert [p["id"] for p in active.json()["items"]] == [second["id"]]
    ended = await stack.shelter.get("/v1/placements", params={"active": "false"}, headers=headers)
    assert [p["id"] for p in ended.json()["items"]] == [first["id"]]


async def test_placements_of_another_municipality_are_404(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m))["id"]
    placed = (
        await stack.shelter.post("/v1/placements", json=placement_body(sid), headers=stack.auth("coordinator", m))
    ).json()
    foreign = stack.auth("coordinator", new_municipality())
    assert (await stack.shelter.get(f"/v1/placements/{placed['id']}", headers=foreign)).status_code == 404
    response = await stack.shelter.post(
        f"/v1/placements/{placed['id']}/discharge", json={"reason": "other"}, headers=foreign
    )
    assert response.status_code == 404
    response = await stack.shelter.post("/v1/placements", json=placement_body(sid), headers=foreign)
    assert response.status_code == 404


async def test_roles_other_than_coordinator_and_staff_may_not_place(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m))["id"]
    for role in ("admin", "police", "social_services", "housing_officer", "auditor"):
        headers = stack.auth(role, m)
        assert (
            await stack.shelter.post("/v1/placements", json=placement_body(sid), headers=headers)
        ).status_code == 403
        assert (await stack.shelter.get("/v1/placements", headers=headers)).status_code == 403


async def test_bad_placement_input_is_422(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m))["id"]
    headers = stack.auth("coordinator", m)
    for bad in (
        {"adults": 0, "children": 0},
        {"adults": -1},
        {"adults": 10**9},
        {"planned_until": "2020-01-01"},
        {"planned_until": "soon"},
        {"case_id": "not-a-uuid"},
    ):
        response = await stack.shelter.post("/v1/placements", json=placement_body(sid, **bad), headers=headers)
        assert response.status_code == 422, bad
        assert response.json()["errors"]


async def test_a_case_closed_at_intake_gets_no_new_placement_until_reopened(stack: Stack) -> None:
    """intake's case.closed and case.reopened, through the broker, reach the shelter's projection."""
    m = new_municipality()
    sid = (await register(stack, m, capacity=4))["id"]
    coordinator = stack.auth("coordinator", m)
    case = await report_case(stack, m)
    case_id = case["case_id"]
    first = await stack.shelter.post("/v1/placements", json=placement_body(sid, case_id), headers=coordinator)
    assert first.status_code == 201, first.text
    await wait_projected(stack, case_id, m, sid)
    about = {"case_id": case_id, "case_number": case["case_number"]}
    application = {"case_id": case_id, "municipality": m, "monthly_rent": "20000.00", "household_size": 1,
                   "requested_months": 3}
    pending = await stack.shelter.post("/v1/rent-bonus/applications", json=application, headers=coordinator)
    assert pending.status_code == 201, pending.text
    await send_intake_event(stack, "case.closed", m, about | {"closed_at": "2026-11-22T10:00:00+00:00"})

    async def refused() -> bool:
        again = await stack.shelter.post("/v1/placements", json=placement_body(sid, case_id), headers=coordinator)
        assert again.status_code in (201, 409), again.text
        if again.status_code == 201:  # the closure had not arrived yet: undo, try again
            undo = await stack.shelter.post(
                f"/v1/placements/{again.json()['id']}/discharge", json={"reason": "moved_on"}, headers=coordinator
            )
            assert undo.status_code == 200, undo.text
            return False
        assert again.headers["content-type"].startswith("application/problem+json")
        assert "closed" in again.json()["detail"]
        return True

    await wait_for(refused, timeout=20, what="the case's closure at the shelter")
    assert await _free_beds(stack, m, sid) == 3  # the placement made before the closure stays
    refused_bonus = await stack.shelter.post("/v1/rent-bonus/applications", json=application, headers=coordinator)
    assert refused_bonus.status_code == 409, refused_bonus.text
    officer = stack.auth("housing_officer", m)
    approval = {"approved": True, "monthly_amount": "20000.00", "start_month": "2026-01", "months": 1, "reason": "ok"}
    refused_approval = await stack.shelter.post(
        f"/v1/rent-bonus/applications/{pending.json()['id']}/decision", json=approval, headers=officer
    )
    assert refused_approval.status_code == 409 and "closed" in refused_approval.json()["detail"]
    await send_intake_event(stack, "case.reopened", m, about)

    async def accepted() -> bool:
        again = await stack.shelter.post("/v1/placements", json=placement_body(sid, case_id), headers=coordinator)
        assert again.status_code in (201, 409), again.text
        return again.status_code == 201

    await wait_for(accepted, timeout=20, what="the case's reopening at the shelter")
