"""A retried placement with its Idempotency-Key takes the beds once and answers as the first time."""

from __future__ import annotations

import asyncio
import uuid

from tests.shelter.helpers import placement_body, register
from tests.support import Stack, new_municipality


async def test_retry_with_the_same_key_takes_beds_once_and_returns_the_first_answer(stack: Stack) -> None:
    municipality = new_municipality()
    shelter = await register(stack, municipality, capacity=5)
    headers = {**stack.auth("coordinator", municipality), "Idempotency-Key": str(uuid.uuid4())}
    body = placement_body(shelter["id"], adults=2)
    first = await stack.shelter.post("/v1/placements", json=body, headers=headers)
    again = await stack.shelter.post("/v1/placements", json=body, headers=headers)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.json() == first.json()
    current = await stack.shelter.get(f"/v1/shelters/{shelter['id']}", headers=stack.auth("coordinator", municipality))
    assert current.json()["free_beds"] == 3


async def test_same_key_with_another_body_is_409_and_changes_nothing(stack: Stack) -> None:
    municipality = new_municipality()
    shelter = await register(stack, municipality, capacity=5)
    headers = {**stack.auth("coordinator", municipality), "Idempotency-Key": "retry-1"}
    first = await stack.shelter.post("/v1/placements", json=placement_body(shelter["id"]), headers=headers)
    assert first.status_code == 201
    other = await stack.shelter.post("/v1/placements", json=placement_body(shelter["id"], adults=3), headers=headers)
    assert other.status_code == 409
    assert other.headers["content-type"].startswith("application/problem+json")
    current = await stack.shelter.get(f"/v1/shelters/{shelter['id']}", headers=stack.auth("coordinator", municipality))
    assert current.json()["free_beds"] == 4


async def test_ten_racing_retries_make_one_placement(stack: Stack) -> None:
    municipality = new_municipality()
    shelter = await register(stack, municipality, capacity=5)
    headers = {**stack.auth("coordinator", municipality), "Idempotency-Key": str(uuid.uuid4())}
    body = placement_body(shelter["id"])
    answers = await asyncio.gather(
        *(stack.shelter.post("/v1/placements", json=body, headers=headers) for _ in range(10))
    )
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    listed = await stack.shelter.get(
        "/v1/placements", params={"shelter_id": shelter["id"]}, headers=stack.auth("coordinator", municipality)
    )
    assert len(listed.json()["items"]) == 1


async def test_a_refused_placement_leaves_its_key_free(stack: Stack) -> None:
    municipality = new_municipality()
    shelter = await register(stack, municipality, capacity=2)
    coordinator = stack.auth("coordinator", municipality)
    occupying = await stack.shelter.post("/v1/placements", json=placement_body(shelter["id"], adults=2),
                                         headers=coordinator)
    assert occupying.status_code == 201
    keyed = {**coordinator, "Idempotency-Key": "k-refused"}
    body = placement_body(shelter["id"])
    assert (await stack.shelter.post("/v1/placements", json=body, headers=keyed)).status_code == 409
    discharged = await stack.shelter.post(
        f"/v1/placements/{occupying.json()['id']}/discharge", json={"reason": "moved_on"}, headers=coordinator
    )
    assert discharged.status_code == 200, discharged.text
    retried = await stack.shelter.post("/v1/placements", json=body, headers=keyed)
    assert retried.status_code == 201  # the refusal was not stored: the retry ran and found a bed
