"""The coordinator's duplicate decisions (CONTRACT §10): link, rule apart, undo; repeats; escalation."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from shared import db
from tests.intake.conftest import reported
from tests.support import Stack, contract_report, new_municipality


def survivor(first: str = "Ermira", last: str = "Hoxha", **extra: Any) -> dict[str, Any]:
    return contract_report("x")["survivor"] | {"first_name": first, "last_name": last} | extra


async def coordinator_report(stack: Stack, municipality: str, **overrides: Any) -> dict[str, Any]:
    body = contract_report(municipality, **overrides)
    response = await stack.intake.post("/v1/cases", json=body, headers=stack.auth("coordinator", municipality))
    assert response.status_code == 201, response.text
    return dict(response.json())


async def link(stack: Stack, municipality: str, case_id: str, other_id: str, relation: str = "same_person") -> Any:
    return await stack.intake.post(
        f"/v1/cases/{case_id}/links",
        json={"case_id": other_id, "relation": relation},
        headers=stack.auth("coordinator", municipality),
    )


async def read(stack: Stack, municipality: str, case_id: str, role: str = "coordinator", **claims: Any) -> Any:
    response = await stack.intake.get(f"/v1/cases/{case_id}", headers=stack.auth(role, municipality, **claims))
    assert response.status_code == 200, response.text
    return response.json()


async def intake_events(stack: Stack, type_: str, case_id: str) -> list[dict[str, Any]]:
    """What intake wrote to its outbox for the case (the relay publishes exactly these)."""
    engine = db.create_engine(stack.settings, "intake")
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.text("SELECT payload FROM outbox WHERE key = :k ORDER BY id"), {"k": case_id}
            )
            events = [json.loads(row[0]) for row in rows]
    finally:
        await engine.dispose()
    return [e for e in events if e["type"] == type_]


async def audit_actions(stack: Stack, case_ids: list[str]) -> list[str]:
    engine = db.create_engine(stack.settings, "intake")
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.text("SELECT action FROM audit_log WHERE case_id = ANY(CAST(:ids AS uuid[]))"), {"ids": case_ids}
            )
            return [row[0] for row in rows]
    finally:
        await engine.dispose()


async def test_same_person_link_makes_the_later_case_a_repeat_and_is_published_without_identity(
    intake: Stack,
) -> None:
    m = new_municipality()
    first = await reported(intake, m, survivor=survivor())
    second = await reported(intake, m, survivor=survivor("Ermirë", "Hoxhë"))
    assert [d["id"] for d in second["possible_duplicates"]] == [first["id"]]
    assert [d["id"] for d in (await read(intake, m, second["id"]))["possible_duplicates"]] == [first["id"]]

    response = await link(intake, m, second["id"], first["id"])
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["repeat"] is True and body["repeat_of"] == first["id"]
    assert body["linked_case_ids"] == [first["id"]] and body["possible_duplicates"] == []
    later, earlier = await read(intake, m, second["id"]), await read(intake, m, first["id"])
    assert later["repeat"] is True and later["repeat_of"] == first["id"] and later["linked_case_ids"] == [first["id"]]
    assert earlier["repeat"] is False and earlier["linked_case_ids"] == [second["id"]]
    assert later["possible_duplicates"] == [] and earlier["possible_duplicates"] == []
    # The same decision again changes nothing.
    again = await link(intake, m, first["id"], second["id"])
    assert again.status_code == 200 and again.json()["linked_case_ids"] == [second["id"]]

    events = await intake_events(intake, "case.linked", second["id"])
    assert len(events) == 1
    data = events[0]["data"]
    assert data["repeat"] is True and data["linked_count"] == 1 and data["pending_duplicates"] == 0
    assert first["id"] not in str(data) and "Ermir" not in str(events[0])
    reported_event = (await intake_events(intake, "case.reported", second["id"]))[0]
    assert reported_event["data"]["pending_duplicates"] == 1
    # Audited on both cases.
    assert (await audit_actions(intake, [first["id"], second["id"]])).count("case.linked") == 2


async def test_an_earlier_case_more_than_12_months_before_is_linked_but_not_a_repeat(intake: Stack) -> None:
    m = new_municipality()
    old = await coordinator_report(intake, m, survivor=survivor(), reported_at="2024-03-01T10:00:00+01:00")
    new = await coordinator_report(intake, m, survivor=survivor())
    body = (await link(intake, m, new["id"], old["id"])).json()
    assert body["linked_case_ids"] == [old["id"]] and body["repeat"] is False and body["repeat_of"] is None


async def test_not_same_person_keeps_the_pair_out_of_possible_duplicates_and_undo_restores_it(intake: Stack) -> None:
    m = new_municipality()
    first = await reported(intake, m, survivor=survivor())
    second = await reported(intake, m, survivor=survivor())
    response = await link(intake, m, first["id"], second["id"], "not_same_person")
    assert response.status_code == 201, response.text
    assert response.json()["not_same_person_case_ids"] == [second["id"]]
    for case in (first, second):
        shown = await read(intake, m, case["id"])
        assert shown["possible_duplicates"] == [] and shown["linked_case_ids"] == [] and shown["repeat"] is False
    # The other decision on a decided pair is a conflict: undo first.
    assert (await link(intake, m, second["id"], first["id"])).status_code == 409

    undone = await intake.intake.delete(
        f"/v1/cases/{second['id']}/links/{first['id']}", headers=intake.auth("coordinator", m)
    )
    assert undone.status_code == 200, undone.text
    assert [d["id"] for d in undone.json()["possible_duplicates"]] == [first["id"]]
    assert (await intake_events(intake, "case.unlinked", second["id"]))[0]["data"]["pending_duplicates"] == 1
    missing = await intake.intake.delete(
        f"/v1/cases/{second['id']}/links/{first['id']}", headers=intake.auth("coordinator", m)
    )
    assert missing.status_code == 404


async def test_undoing_a_same_person_link_ends_the_repeat(intake: Stack) -> None:
    m = new_municipality()
    first = await reported(intake, m, survivor=survivor())
    second = await reported(intake, m, survivor=survivor())
    assert (await link(intake, m, second["id"], first["id"])).json()["repeat"] is True
    undone = await intake.intake.delete(
        f"/v1/cases/{first['id']}/links/{second['id']}", headers=intake.auth("coordinator", m)
    )
    assert undone.status_code == 200
    shown = await read(intake, m, second["id"])
    assert shown["repeat"] is False and shown["linked_case_ids"] == []
    assert (await intake_events(intake, "case.unlinked", second["id"]))[-1]["data"]["repeat"] is False


async def test_the_third_case_of_the_same_person_within_the_window_is_raised_to_high(intake: Stack) -> None:
    m = new_municipality()
    cases = [await reported(intake, m, survivor=survivor()) for _ in range(3)]
    assert {c["risk_level"] for c in cases} == {"low"}
    await link(intake, m, cases[0]["id"], cases[1]["id"])
    assert (await read(intake, m, cases[1]["id"]))["risk_level"] == "low"  # a second case: a repeat only
    body = (await link(intake, m, cases[2]["id"], cases[1]["id"])).json()
    assert body["risk_level"] == "high" and sorted(body["linked_case_ids"]) == sorted(c["id"] for c in cases[:2])
    third = await read(intake, m, cases[2]["id"])
    assert third["risk_level"] == "high"
    assert third["risk_assessments"][-1]["red_flags"] == ["potential_escalation"]
    assert [(await read(intake, m, c["id"]))["risk_level"] for c in cases[:2]] == ["low", "low"]
    raised = await intake_events(intake, "case.risk_assessed", cases[2]["id"])
    assert raised[-1]["data"]["risk_level"] == "high" and raised[-1]["data"]["previous_risk_level"] == "low"


async def test_the_escalation_count_is_a_setting_of_the_municipality(intake: Stack) -> None:
    m = new_municipality()
    coordinator = intake.auth("coordinator", m)
    screen = (await intake.intake.get("/v1/risk-screen", headers=coordinator)).json()
    assert (screen["escalation_cases"], screen["escalation_window_days"]) == (3, 365)
    body = {k: screen[k] for k in ("questions", "high_yes_count", "medium_yes_count")} | {"escalation_cases": 2}
    assert (await intake.intake.put("/v1/risk-screen", json=body, headers=coordinator)).status_code == 200
    first = await reported(intake, m, survivor=survivor())
    second = await reported(intake, m, survivor=survivor())
    assert (await link(intake, m, second["id"], first["id"])).json()["risk_level"] == "high"


async def test_links_are_the_coordinators_and_of_her_municipality_only(intake: Stack) -> None:
    m, elsewhere = new_municipality(), new_municipality()
    case = await reported(intake, m, survivor=survivor())
    other = await reported(intake, m, survivor=survivor())
    foreign = await reported(intake, elsewhere, survivor=survivor())
    # Another municipality's case: 404, in the path or in the body, and nothing changes.
    assert (await link(intake, m, case["id"], foreign["id"])).status_code == 404
    assert (await link(intake, elsewhere, case["id"], foreign["id"])).status_code == 404
    assert (await link(intake, m, case["id"], case["id"])).status_code == 422
    bad = await intake.intake.post(
        f"/v1/cases/{case['id']}/links", json={"case_id": other["id"], "relation": "maybe"},
        headers=intake.auth("coordinator", m),
    )
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    for role, claims in (("police", {"member_id": "m-police"}), ("auditor", {}), ("admin", {})):
        response = await intake.intake.post(
            f"/v1/cases/{case['id']}/links", json={"case_id": other["id"], "relation": "same_person"},
            headers=intake.auth(role, m, **claims),
        )
        assert response.status_code == 403, (role, response.text)
        deleted = await intake.intake.delete(
            f"/v1/cases/{case['id']}/links/{other['id']}", headers=intake.auth(role, m, **claims)
        )
        assert deleted.status_code == 403
    assert (await read(intake, m, case["id"]))["linked_case_ids"] == []
    # The reporting institution reads the repeat flag, never the other cases' ids.
    await link(intake, m, other["id"], case["id"])
    seen = await read(intake, m, other["id"], "police", member_id="m-police")
    assert seen["repeat"] is True and seen["repeat_of"] is None and seen["linked_case_ids"] == []
