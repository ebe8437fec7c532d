"""The shelter registry: who sees what, filters, ETags, secret locations encrypted at rest."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from services.shelter.models import Shelter
from tests.shelter.helpers import outbox_events, register, shelter_body, staff
from tests.support import Stack, new_municipality


async def test_coordinator_registers_a_shelter_with_all_beds_free(stack: Stack) -> None:
    m = new_municipality()
    shelter = await register(stack, m, capacity=8)
    assert shelter["free_beds"] == 8
    assert shelter["capacity"] == 8
    assert shelter["address"] == "Rruga e Fshehtë 7"
    assert shelter["version"] == 1
    events = await outbox_events(stack, "shelter.availability_changed", shelter_id=shelter["id"])
    assert events[0]["data"]["free_beds"] == 8
    assert "address" not in events[0]["data"] and "phone" not in events[0]["data"]


async def test_admin_registers_but_never_reads_the_address(stack: Stack) -> None:
    m = new_municipality()
    response = await stack.shelter.post("/v1/shelters", json=shelter_body(m), headers=stack.auth("admin", m))
    assert response.status_code == 201, response.text
    assert "address" not in response.json() and "phone" not in response.json()


async def test_address_and_phone_only_for_coordinator_and_own_staff(stack: Stack) -> None:
    m = new_municipality()
    shelter = await register(stack, m)
    other = await register(stack, m, name="Another")
    sid = shelter["id"]
    own = await stack.shelter.get(f"/v1/shelters/{sid}", headers=staff(stack, m, sid))
    assert own.json()["address"] == "Rruga e Fshehtë 7" and own.json()["phone"] == "+355690000001"
    coordinator = await stack.shelter.get(f"/v1/shelters/{sid}", headers=stack.auth("coordinator", m))
    assert coordinator.json()["address"] == "Rruga e Fshehtë 7"
    for headers in (
        staff(stack, m, other["id"]),
        stack.auth("police", m, member_id="p1"),
        stack.auth("admin", m),
        stack.auth("housing_officer", m),
        stack.auth("auditor", "*"),
    ):
        one = await stack.shelter.get(f"/v1/shelters/{sid}", headers=headers)
        assert one.status_code == 200
        assert "address" not in one.json() and "phone" not in one.json()
        listed = await stack.shelter.get("/v1/shelters", params={"municipality": m}, headers=headers)
        by_id = {s["id"]: s for s in listed.json()["items"]}
        assert set(by_id) == {sid, other["id"]}
        assert "address" not in by_id[sid] and "phone" not in by_id[sid]
    # In a list, the staff see their own shelter's contact only.
    listed = await stack.shelter.get("/v1/shelters", headers=staff(stack, m, sid))
    by_id = {s["id"]: s for s in listed.json()["items"]}
    assert "address" in by_id[sid] and "address" not in by_id[other["id"]]


async def test_address_and_phone_are_encrypted_at_rest(stack: Stack) -> None:
    m = new_municipality()
    shelter = await register(stack, m)
    async with stack.apps["shelter"].state.runtime.sessions() as session:
        row = (
            await session.execute(sa.select(Shelter).where(Shelter.id == uuid.UUID(shelter["id"])))  # type: ignore[arg-type]
        ).scalar_one()
    assert "Fshehtë" not in row.address and "+355" not in row.phone
    assert row.address.startswith("k") and ":" in row.address


async def test_list_filters_free_beds_and_children(stack: Stack) -> None:
    m = new_municipality()
    big = await register(stack, m, capacity=6, accepts_children=True, name="Big")
    await register(stack, m, capacity=2, accepts_children=True, name="Small")
    await register(stack, m, capacity=9, accepts_children=False, name="Adults only")
    headers = stack.auth("social_services", m, member_id="ss")
    response = await stack.shelter.get(
        "/v1/shelters", params={"municipality": m, "min_free_beds": 3, "accepts_children": "true"}, headers=headers
    )
    assert response.status_code == 200
    assert [s["id"] for s in response.json()["items"]] == [big["id"]]
    assert response.json()["items"][0]["free_beds"] == 6


async def test_another_municipality_is_404_and_absent_from_lists(stack: Stack) -> None:
    m, elsewhere = new_municipality(), new_municipality()
    shelter = await register(stack, m)
    headers = stack.auth("coordinator", elsewhere)
    assert (await stack.shelter.get(f"/v1/shelters/{shelter['id']}", headers=headers)).status_code == 404
    listed = await stack.shelter.get("/v1/shelters", params={"municipality": m}, headers=headers)
    assert listed.json() == {"items": [], "next_cursor": None}
    assert (await stack.shelter.get("/v1/shelters", headers=headers)).json() == {"items": [], "next_cursor": None}


async def test_registering_for_another_municipality_is_refused(stack: Stack) -> None:
    m = new_municipality()
    response = await stack.shelter.post(
        "/v1/shelters", json=shelter_body(new_municipality()), headers=stack.auth("coordinator", m)
    )
    assert response.status_code == 403


async def test_roles_that_may_not_register_get_403(stack: Stack) -> None:
    m = new_municipality()
    for role in ("police", "shelter_staff", "housing_officer", "auditor"):
        response = await stack.shelter.post("/v1/shelters", json=shelter_body(m), headers=stack.auth(role, m))
        assert response.status_code == 403, role


async def test_bad_shelter_input_is_422(stack: Stack) -> None:
    m = new_municipality()
    headers = stack.auth("coordinator", m)
    for bad in ({"kind": "hotel"}, {"capacity": 0}, {"capacity": 10**12}, {"free_beds": 9, "capacity": 3}):
        response = await stack.shelter.post("/v1/shelters", json=shelter_body(m, **bad), headers=headers)
        assert response.status_code == 422, bad
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["errors"]
    assert (await stack.shelter.get("/v1/shelters/not-a-uuid", headers=headers)).status_code == 422
    assert (await stack.shelter.get(f"/v1/shelters/{uuid.uuid4()}", headers=headers)).status_code == 404


async def test_get_returns_a_weak_etag_of_the_version(stack: Stack) -> None:
    m = new_municipality()
    shelter = await register(stack, m)
    response = await stack.shelter.get(f"/v1/shelters/{shelter['id']}", headers=stack.auth("coordinator", m))
    assert response.headers["etag"] == 'W/"1"'
