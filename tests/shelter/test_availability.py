"""Bed availability kept by the shelter's own staff, with optimistic concurrency (If-Match)."""

from __future__ import annotations

import uuid

from tests.shelter.helpers import outbox_events, register, staff
from tests.support import Stack, new_municipality


async def _read(stack: Stack, m: str, sid: str) -> tuple[dict[str, object], str]:
    response = await stack.shelter.get(f"/v1/shelters/{sid}", headers=stack.auth("coordinator", m))
    return response.json(), response.headers["etag"]


async def test_staff_update_free_beds_with_the_current_etag(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m, capacity=5))["id"]
    _, etag = await _read(stack, m, sid)
    response = await stack.shelter.put(
        f"/v1/shelters/{sid}/availability",
        json={"free_beds": 3},
        headers={**staff(stack, m, sid), "If-Match": etag},
    )
    assert response.status_code == 200, response.text
    assert response.json()["free_beds"] == 3
    assert response.headers["etag"] == 'W/"2"' != etag
    events = await outbox_events(stack, "shelter.availability_changed", shelter_id=sid, free_beds=3)
    assert events and events[0]["data"]["capacity"] == 5 and events[0]["source"] == "mkr/shelter"


async def test_missing_if_match_is_428(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m))["id"]
    response = await stack.shelter.put(
        f"/v1/shelters/{sid}/availability", json={"free_beds": 3}, headers=staff(stack, m, sid)
    )
    assert response.status_code == 428
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_stale_etag_is_412(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m))["id"]
    _, etag = await _read(stack, m, sid)
    headers = {**staff(stack, m, sid), "If-Match": etag}
    first = await stack.shelter.put(f"/v1/shelters/{sid}/availability", json={"free_beds": 4}, headers=headers)
    assert first.status_code == 200
    second = await stack.shelter.put(f"/v1/shelters/{sid}/availability", json={"free_beds": 2}, headers=headers)
    assert second.status_code == 412
    assert second.headers["etag"] == first.headers["etag"]
    body, _ = await _read(stack, m, sid)
    assert body["free_beds"] == 4


async def test_free_beds_above_capacity_or_negative_is_422(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m, capacity=5))["id"]
    _, etag = await _read(stack, m, sid)
    headers = {**staff(stack, m, sid), "If-Match": etag}
    for value in (6, -1, 10**9, "many"):
        response = await stack.shelter.put(
            f"/v1/shelters/{sid}/availability", json={"free_beds": value}, headers=headers
        )
        assert response.status_code == 422, value
        assert response.json()["errors"]


async def test_reaching_zero_publishes_shelter_full(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m, capacity=2))["id"]
    _, etag = await _read(stack, m, sid)
    response = await stack.shelter.put(
        f"/v1/shelters/{sid}/availability", json={"free_beds": 0}, headers={**staff(stack, m, sid), "If-Match": etag}
    )
    assert response.status_code == 200
    full = await outbox_events(stack, "shelter.full", shelter_id=sid)
    assert len(full) == 1 and full[0]["data"]["free_beds"] == 0


async def test_staff_of_another_shelter_may_not_update(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m))["id"]
    other = (await register(stack, m))["id"]
    _, etag = await _read(stack, m, sid)
    response = await stack.shelter.put(
        f"/v1/shelters/{sid}/availability", json={"free_beds": 1}, headers={**staff(stack, m, other), "If-Match": etag}
    )
    assert response.status_code == 403


async def test_another_municipality_and_unknown_shelter_are_404(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m))["id"]
    headers = {**stack.auth("coordinator", new_municipality()), "If-Match": 'W/"1"'}
    response = await stack.shelter.put(f"/v1/shelters/{sid}/availability", json={"free_beds": 1}, headers=headers)
    assert response.status_code == 404
    response = await stack.shelter.put(
        f"/v1/shelters/{uuid.uuid4()}/availability", json={"free_beds": 1}, headers=headers
    )
    assert response.status_code == 404


async def test_roles_other_than_staff_and_coordinator_get_403(stack: Stack) -> None:
    m = new_municipality()
    sid = (await register(stack, m))["id"]
    for role in ("admin", "police", "housing_officer", "auditor"):
        response = await stack.shelter.put(
            f"/v1/shelters/{sid}/availability",
            json={"free_beds": 1},
            headers={**stack.auth(role, m), "If-Match": 'W/"1"'},
        )
        assert response.status_code == 403, role
