"""The survivor's own file (issue #17): `GET /v1/cases/{id}/export` gathers the four services' parts
with the coordinator's token (JSON or PDF); `PATCH /v1/cases/{id}/survivor` corrects her identity with
history, and the duplicate index follows."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.intake.test_erasure import _other_services_text, _person, _report
from tests.support import Stack, contract_report, new_municipality, wait_for


@pytest.fixture
def peers(stack: Stack) -> Stack:
    """Intake reaches the other in-process services as it would their ports."""
    stack.apps["intake"].state.peer_transports = {
        name: httpx.ASGITransport(app=stack.apps[name]) for name in ("referral", "shelter", "notifications")
    }
    return stack


async def _export(stack: Stack, m: str, case_id: str, **headers: str) -> httpx.Response:
    return await stack.intake.get(f"/v1/cases/{case_id}/export", headers=stack.auth("coordinator", m) | headers)


async def test_the_file_holds_what_every_service_holds(peers: Stack) -> None:
    stack = peers
    m = new_municipality()
    coordinator = stack.auth("coordinator", m)
    person = _person("file")
    case_id = (await _report(stack, m, person))["id"]
    await _other_services_text(stack, m, case_id, "file")
    order = await stack.intake.post(f"/v1/cases/{case_id}/protection-orders", headers=coordinator,
                                    json={"kind": "immediate", "status": "requested"})
    assert order.status_code == 201, order.text

    answer = await _export(stack, m, case_id)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    doc: dict[str, Any] = answer.json()
    assert doc["complete"] is True and doc["incomplete"] == []
    assert doc["case"]["survivor"]["last_name"] == person["last_name"]
    assert doc["case"]["incident"]["description"] == person["narrative"]
    assert doc["case"]["risk_assessments"] and doc["case"]["protection_orders"]
    assert "health" in doc["case"]["consent"]["share_with"]
    assert "NOTE-file meet her at the back door" in [r["note"] for r in doc["referrals"]]
    assert doc["routing"]["decisions"]
    assert [p["end_reason"] for p in doc["placements"]] == ["DISCHARGE-file went home"]
    assert [a["reason"] for a in doc["rent_bonus"]] == ["DECISION-file income too high"]
    assert isinstance(doc["alerts"], list)
    assert "case.exported" in [entry["action"] for entry in doc["audit"]]

    printable = await _export(stack, m, case_id, Accept="application/pdf")
    assert printable.status_code == 200 and printable.headers["content-type"] == "application/pdf"
    assert printable.content.startswith(b"%PDF-") and len(printable.content) > 1000

    police = stack.auth("police", m, member_id="m-police")
    assert (await stack.intake.get(f"/v1/cases/{case_id}/export", headers=police)).status_code == 403
    other = stack.auth("coordinator", new_municipality())
    assert (await stack.intake.get(f"/v1/cases/{case_id}/export", headers=other)).status_code == 404
    trail = (await stack.intake.get("/v1/audit", params={"case_id": case_id}, headers=coordinator)).json()["items"]
    assert [e["action"] for e in trail].count("case.exported") == 2


async def test_a_part_not_given_is_named(peers: Stack) -> None:
    stack = peers
    m = new_municipality()
    case_id = (await _report(stack, m, _person("gap")))["id"]
    app = stack.apps["intake"]
    config = app.state.intake_config
    transports = dict(app.state.peer_transports)
    app.state.peer_transports.pop("notifications")
    app.state.intake_config = config.model_copy(update={"notifications_url": "http://127.0.0.1:9"})
    try:
        doc = (await _export(stack, m, case_id)).json()
    finally:
        app.state.intake_config, app.state.peer_transports = config, transports
    assert doc["complete"] is False
    assert doc["incomplete"] == [{"section": "alerts", "service": "notifications", "status": 503}]
    assert "alerts" not in doc and doc["case"]["id"] == case_id


async def test_identity_correction_keeps_history_and_reaches_the_duplicate_index(peers: Stack) -> None:
    stack = peers
    m = new_municipality()
    coordinator = stack.auth("coordinator", m)
    person, corrected = _person("before"), _person("after")
    case_id = (await _report(stack, m, person))["id"]
    path = f"/v1/cases/{case_id}/survivor"
    for bad in ({}, {"first_name": None}, {"last_name": ""}, {"nickname": "x"}, {"date_of_birth": "1850-01-01"}):
        refused = await stack.intake.patch(path, json=bad, headers=coordinator)
        assert refused.status_code == 422, (bad, refused.text)
    police = stack.auth("police", m, member_id="m-police")
    assert (await stack.intake.patch(path, json={"phone": "+355691111111"}, headers=police)).status_code == 403

    fixed = await stack.intake.patch(
        path, json={"last_name": corrected["last_name"], "date_of_birth": "1990-05-06", "address": None},
        headers=coordinator,
    )
    assert fixed.status_code == 200, fixed.text
    survivor = fixed.json()["survivor"]
    assert survivor["last_name"] == corrected["last_name"] and survivor["date_of_birth"] == "1990-05-06"
    assert survivor["address"] is None and survivor["first_name"] == person["first_name"]

    async def search(name: str) -> list[str]:
        found = await stack.intake.get("/v1/cases", params={"q": name}, headers=coordinator)
        return [item["id"] for item in found.json()["items"]]

    assert await search(corrected["last_name"]) == [case_id]
    assert await search(person["last_name"]) == []
    body = contract_report(m)
    body["survivor"].update(first_name=person["first_name"], last_name=corrected["last_name"],
                            date_of_birth="1990-05-06")
    twin = await stack.intake.post("/v1/cases", json=body, headers=coordinator)
    assert case_id in [d["id"] for d in twin.json()["possible_duplicates"]]

    doc = (await _export(stack, m, case_id)).json()
    [entry] = doc["identity_history"]
    assert sorted(entry["fields"]) == ["address", "date_of_birth", "last_name"]
    assert entry["previous"]["last_name"] == person["last_name"]
    assert entry["previous"]["address"] == person["address"]
    trail = (await stack.intake.get("/v1/audit", params={"case_id": case_id}, headers=coordinator)).json()["items"]
    assert "case.survivor_corrected" in [e["action"] for e in trail]

    same = await stack.intake.patch(path, json={"last_name": corrected["last_name"]}, headers=coordinator)
    assert same.status_code == 200
    assert len((await _export(stack, m, case_id)).json()["identity_history"]) == 1  # nothing changed: no entry

    erased = await stack.intake.post(f"/v1/cases/{case_id}/erase", json={"reason": "request"}, headers=coordinator)
    assert erased.status_code == 200
    doc = (await _export(stack, m, case_id)).json()
    assert doc["case"]["survivor"] == {"erased": True}
    assert [e["previous"] for e in doc["identity_history"]] == [None]
    assert (await stack.intake.patch(path, json={"phone": "+355692222222"}, headers=coordinator)).status_code == 409


async def test_a_corrected_date_of_birth_moves_the_case_to_its_age_group_in_referral(peers: Stack) -> None:
    stack = peers
    m = new_municipality()
    coordinator = stack.auth("coordinator", m)
    case_id = (await _report(stack, m, _person("dob")))["id"]  # born 1991: 25-39

    async def age_group() -> str | None:
        async with stack.apps["referral"].state.runtime.engine.connect() as conn:
            row = (await conn.execute(
                sa.text("SELECT age_group FROM case_facts WHERE case_id = :id"), {"id": case_id}
            )).first()
        return None if row is None else str(row[0])

    await wait_for(lambda: _equals(age_group, "25-39"), timeout=20, what="the case in referral's projection")
    path = f"/v1/cases/{case_id}/survivor"
    fixed = await stack.intake.patch(path, json={"date_of_birth": "2010-01-01"}, headers=coordinator)
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["survivor"]["age_group"] == "12-17"
    await wait_for(lambda: _equals(age_group, "12-17"), timeout=20, what="the corrected age group in referral")
    summary = await stack.referral.get(
        "/v1/reports/summary", params={"from": "2026-01-01", "to": "2026-12-31"}, headers=coordinator
    )
    assert summary.status_code == 200, summary.text
    by_age = summary.json()["cases"]["by_age_group"]
    assert by_age["12-17"] == 1 and by_age["25-39"] == 0


async def _equals(read: Any, expected: str) -> bool:
    return bool(await read() == expected)
