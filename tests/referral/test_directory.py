"""The MKR/ETN directory: who may write, who may read, municipality isolation, `member.saved`."""

from __future__ import annotations

import uuid

from tests.referral.helpers import add_member, published
from tests.support import Stack, new_municipality


async def test_admin_registers_member_and_anyone_of_municipality_lists_it(stack: Stack) -> None:
    m = new_municipality()
    member = await add_member(stack, m, "health", "Qendra Shendetesore 1")
    assert member["contact"] == {"email": "health@example.org", "phone": "+355 4 000 000"}
    assert member["active"] is True and member["services"] == ["health"]
    for role, claims in (("police", {"member_id": str(uuid.uuid4())}), ("shelter_staff", {}), ("coordinator", {})):
        listed = await stack.referral.get(
            "/v1/members", params={"kind": "health"}, headers=stack.auth(role, m, **claims)
        )
        assert listed.status_code == 200
        assert [x["id"] for x in listed.json()["items"]] == [member["id"]]
    one = await stack.referral.get(f"/v1/members/{member['id']}", headers=stack.auth("ngo", m))
    assert one.status_code == 200 and one.json()["name"] == "Qendra Shendetesore 1"
    saved = await published(stack, "member.saved", member_id=member["id"])
    assert saved[0]["data"]["kind"] == "health" and saved[0]["municipality"] == m


async def test_kind_filter_returns_only_that_kind(stack: Stack) -> None:
    m = new_municipality()
    await add_member(stack, m, "health")
    police = await add_member(stack, m, "police")
    listed = await stack.referral.get("/v1/members", params={"kind": "police"}, headers=stack.auth("coordinator", m))
    assert [x["id"] for x in listed.json()["items"]] == [police["id"]]
    bad = await stack.referral.get("/v1/members", params={"kind": "wizard"}, headers=stack.auth("coordinator", m))
    assert bad.status_code == 422


async def test_member_of_another_municipality_is_404_and_not_listed(stack: Stack) -> None:
    m, other = new_municipality(), new_municipality()
    member = await add_member(stack, m, "police")
    headers = stack.auth("coordinator", other)
    assert (await stack.referral.get(f"/v1/members/{member['id']}", headers=headers)).status_code == 404
    assert (await stack.referral.get("/v1/members", headers=headers)).json() == {"items": [], "next_cursor": None}
    patch = await stack.referral.patch(f"/v1/members/{member['id']}", json={"active": False}, headers=headers)
    assert patch.status_code == 404


async def test_only_admin_and_coordinator_write_the_directory(stack: Stack) -> None:
    m = new_municipality()
    body = {"name": "X", "kind": "ngo", "municipality": m, "services": []}
    for role in ("police", "shelter_staff", "auditor", "housing_officer"):
        response = await stack.referral.post("/v1/members", json=body, headers=stack.auth(role, m))
        assert response.status_code == 403, role
    created = await stack.referral.post("/v1/members", json=body, headers=stack.auth("coordinator", m))
    assert created.status_code == 201


async def test_member_for_another_municipality_is_refused(stack: Stack) -> None:
    body = {"name": "X", "kind": "ngo", "municipality": new_municipality(), "services": []}
    response = await stack.referral.post("/v1/members", json=body, headers=stack.auth("admin", new_municipality()))
    assert response.status_code == 403


async def test_bad_member_input_is_422_problem(stack: Stack) -> None:
    m = new_municipality()
    body = {"name": "", "kind": "ngo", "municipality": m, "contact": {"email": "not-an-email"}}
    response = await stack.referral.post("/v1/members", json=body, headers=stack.auth("admin", m))
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert {tuple(e["loc"])[-1] for e in response.json()["errors"]} >= {"name", "email"}
    assert (await stack.referral.get("/v1/members/not-a-uuid", headers=stack.auth("admin", m))).status_code == 422


async def test_put_replaces_member_and_publishes_member_saved(stack: Stack) -> None:
    m = new_municipality()
    member = await add_member(stack, m, "ngo")
    body = {"name": "Renamed", "kind": "legal_aid", "municipality": m, "services": ["free_legal_aid"],
            "contact": {"email": "office@example.org"}, "active": True}  # fmt: skip
    response = await stack.referral.put(f"/v1/members/{member['id']}", json=body, headers=stack.auth("coordinator", m))
    assert response.status_code == 200, response.text
    assert response.json()["kind"] == "legal_aid" and response.json()["contact"]["phone"] is None
    saved = await published(stack, "member.saved", member_id=member["id"])
    assert [e["data"]["kind"] for e in saved] == ["ngo", "legal_aid"]
