"""Attacks on what the shelter service stores and lists (issue #11): a stolen database dump, lists
that filter in Python after a fixed fetch, municipality names that are not codes."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from shared.events import REFERRAL_TOPIC, make_event
from shared.sealed import seal_stored
from tests.shelter.helpers import outbox_events, placement_body, register, shelter_body
from tests.support import Stack, dump_database, new_municipality, wait_for

MIGRATION = Path(__file__).parents[2] / "services/shelter/migrations/versions/20261202_0005_sealed_text.py"


async def _place_and_decide(stack: Stack, m: str, discharge: str, decision: str) -> tuple[str, str]:
    coordinator = stack.auth("coordinator", m)
    sid = (await register(stack, m))["id"]
    placed = (await stack.shelter.post("/v1/placements", json=placement_body(sid), headers=coordinator)).json()
    ended = await stack.shelter.post(
        f"/v1/placements/{placed['id']}/discharge", json={"reason": discharge}, headers=coordinator
    )
    assert ended.status_code == 200 and ended.json()["end_reason"] == discharge
    app = await stack.shelter.post(
        "/v1/rent-bonus/applications",
        json={"case_id": str(uuid.uuid4()), "municipality": m, "monthly_rent": "25000.00", "household_size": 2,
              "requested_months": 3},
        headers=coordinator,
    )  # fmt: skip
    assert app.status_code == 201, app.text
    decided = await stack.shelter.post(
        f"/v1/rent-bonus/applications/{app.json()['id']}/decision",
        json={"approved": False, "reason": decision},
        headers=stack.auth("housing_officer", m),
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["reason"] == decision
    return placed["id"], app.json()["id"]


async def test_database_dump_shows_no_shelter_free_text(stack: Stack) -> None:
    m = new_municipality()
    discharge, decision = "DISCHARGE-a81f went back to him in Fier", "DECISION-17ce landlord is her uncle"
    placement_id, app_id = await _place_and_decide(stack, m, discharge, decision)
    coordinator = stack.auth("coordinator", m)
    shown = await stack.shelter.get(f"/v1/placements/{placement_id}", headers=coordinator)
    assert shown.json()["end_reason"] == discharge
    listed = await stack.shelter.get("/v1/placements", params={"active": "false"}, headers=coordinator)
    assert [p["end_reason"] for p in listed.json()["items"]] == [discharge]
    app = await stack.shelter.get(f"/v1/rent-bonus/applications/{app_id}", headers=coordinator)
    assert app.json()["reason"] == decision
    dump = await dump_database(stack, "shelter")
    assert placement_id in dump and app_id in dump
    for secret in (discharge, decision):
        assert secret.split()[0] not in dump
    ended = await outbox_events(stack, "placement.ended", placement_id=placement_id)
    assert ended[0]["data"]["reason"] == "other"


async def test_shelter_plaintext_stored_before_sealing_is_sealed_by_the_migration(stack: Stack) -> None:
    m = new_municipality()
    placement_id, app_id = await _place_and_decide(stack, m, "moved_on", "no budget line")
    engine = stack.apps["shelter"].state.runtime.engine
    old_discharge, old_decision = "OLDDISCHARGE-6c0e plaintext", "OLDDECISION-93ad plaintext"
    async with engine.begin() as conn:  # rows as the first release stored them
        await conn.execute(sa.text("UPDATE placements SET end_reason = :r WHERE id = :id"),
                           {"r": old_discharge, "id": uuid.UUID(placement_id)})  # fmt: skip
        await conn.execute(sa.text("UPDATE rent_bonus_applications SET decision_reason = :r WHERE id = :id"),
                           {"r": old_decision, "id": uuid.UUID(app_id)})  # fmt: skip
    assert old_discharge in await dump_database(stack, "shelter")
    spec = importlib.util.spec_from_file_location("shelter_0005", MIGRATION)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # it imports cleanly
    sealer = stack.apps["shelter"].state.text_sealer
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: seal_stored(c, sealer, "placements", ("end_reason",)))
        await conn.run_sync(lambda c: seal_stored(c, sealer, "rent_bonus_applications", ("decision_reason",)))
    dump = await dump_database(stack, "shelter")
    assert "OLDDISCHARGE" not in dump and "OLDDECISION" not in dump
    coordinator = stack.auth("coordinator", m)
    assert (await stack.shelter.get(f"/v1/placements/{placement_id}", headers=coordinator)).json()[
        "end_reason"
    ] == old_discharge
    assert (await stack.shelter.get(f"/v1/rent-bonus/applications/{app_id}", headers=coordinator)).json()[
        "reason"
    ] == old_decision


async def test_rent_bonus_list_filters_in_sql_not_after_the_fetch(stack: Stack) -> None:
    """Social services see only their own applications; with more newer ones of others than the
    page holds, their own must still be listed (it was filtered out in Python after the fetch)."""
    m = new_municipality()

    async def submit(sub: str) -> str:
        answer = await stack.shelter.post(
            "/v1/rent-bonus/applications",
            json={"case_id": str(uuid.uuid4()), "municipality": m, "monthly_rent": "20000.00", "household_size": 1,
                  "requested_months": 2},
            headers=stack.auth("social_services", m, sub=sub),
        )  # fmt: skip
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    mine = await submit("worker-mine")
    for _ in range(4):
        await submit("worker-other")
    listed = await stack.shelter.get(
        "/v1/rent-bonus/applications", params={"limit": 3}, headers=stack.auth("social_services", m, sub="worker-mine")
    )
    assert listed.status_code == 200 and [a["id"] for a in listed.json()["items"]] == [mine]
    everything = await stack.shelter.get("/v1/rent-bonus/applications", headers=stack.auth("coordinator", m))
    assert len(everything.json()["items"]) == 5
    for path in ("/v1/rent-bonus/applications", "/v1/placements", "/v1/shelters"):
        too_many = await stack.shelter.get(path, params={"limit": 201}, headers=stack.auth("coordinator", m))
        assert too_many.status_code == 422, path


async def test_shelter_lists_are_bounded(stack: Stack) -> None:
    m = new_municipality()
    for _ in range(3):
        await register(stack, m)
    coordinator = stack.auth("coordinator", m)
    assert len((await stack.shelter.get("/v1/shelters", params={"limit": 2}, headers=coordinator)).json()["items"]) == 2
    assert len((await stack.shelter.get("/v1/shelters", headers=coordinator)).json()["items"]) == 3


async def test_unslugged_municipality_in_budget_path_is_422(stack: Stack) -> None:
    officer = stack.auth("housing_officer", "elbasan")
    for bad in ("Elbasan", "el basan", "x" * 70, "élbasan"):
        got = await stack.shelter.get(f"/v1/rent-bonus/budgets/{bad}/2026", headers=officer)
        assert got.status_code == 422, (bad, got.status_code)
        put = await stack.shelter.put(f"/v1/rent-bonus/budgets/{bad}/2026", json={"amount": "1.00"}, headers=officer)
        assert put.status_code == 422, (bad, put.status_code)
    shelters = await stack.shelter.get("/v1/shelters", params={"municipality": "Bad Name"}, headers=officer)
    assert shelters.status_code == 422


async def _member_saved(stack: Stack, municipality: str, member_id: str, kind: str, active: bool) -> None:
    """Publish referral's `member.saved` to the real broker, as the referral service does."""
    event = make_event(
        type_="member.saved", source="mkr/referral", subject=member_id, municipality=municipality,
        data={"member_id": member_id, "name": f"{kind} office", "kind": kind, "services": [], "email": None,
              "active": active},
    )  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=stack.settings.kafka_bootstrap, enable_idempotence=False, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            stack.settings.topic(REFERRAL_TOPIC), value=event.model_dump_json().encode(), key=member_id.encode()
        )
    finally:
        await producer.stop()


async def test_shelter_cannot_borrow_another_members_identity(stack: Stack) -> None:
    """A shelter's `member_id` decides which referrals its staff read: only a real, active directory
    member of kind shelter of the same municipality may be named (422 otherwise)."""
    m, elsewhere = new_municipality(), new_municipality()

    async def member(municipality: str, kind: str, active: bool = True) -> str:
        member_id = str(uuid.uuid4())
        await _member_saved(stack, municipality, member_id, kind, active)
        return member_id

    police = await member(m, "police")
    foreign_shelter = await member(elsewhere, "shelter")
    inactive_shelter = await member(m, "shelter", active=False)
    own_shelter = await member(m, "shelter")
    coordinator = stack.auth("coordinator", m)

    async def projected() -> bool:
        engine = stack.apps["shelter"].state.runtime.engine
        async with engine.connect() as conn:
            known = await conn.scalar(
                sa.text("SELECT count(*) FROM directory_members WHERE member_id = ANY(:ids)"),
                {"ids": [police, foreign_shelter, inactive_shelter, own_shelter]},
            )
        return known == 4

    await wait_for(projected, timeout=30, what="shelter's projection of member.saved")
    for borrowed in (police, foreign_shelter, inactive_shelter, str(uuid.uuid4()), "not-a-member"):
        body = shelter_body(m, member_id=borrowed)
        refused = await stack.shelter.post("/v1/shelters", json=body, headers=coordinator)
        assert refused.status_code == 422, (borrowed, refused.text)
        assert refused.json()["errors"][0]["loc"] == ["body", "member_id"]
    listed = await stack.shelter.get("/v1/shelters", headers=coordinator)
    assert listed.json() == {"items": [], "next_cursor": None}
    created = await stack.shelter.post("/v1/shelters", json=shelter_body(m, member_id=own_shelter), headers=coordinator)
    assert created.status_code == 201, created.text
    assert created.json()["member_id"] == own_shelter
    # A member later deactivated can no longer be claimed by a new shelter.
    await _member_saved(stack, m, own_shelter, "shelter", False)

    async def deactivated() -> bool:
        body = shelter_body(m, member_id=own_shelter)
        again = await stack.shelter.post("/v1/shelters", json=body, headers=coordinator)
        return again.status_code == 422

    await wait_for(deactivated, timeout=30, what="the deactivation to reach the shelter service")
