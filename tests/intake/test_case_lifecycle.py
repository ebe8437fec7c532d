"""Protection orders, consent, closing and reopening."""

from __future__ import annotations

import pytest

from tests.intake.conftest import reported
from tests.support import Stack, new_municipality

ORDER = {
    "kind": "immediate",
    "status": "issued",
    "issued_at": "2026-11-21T10:00:00+01:00",
    "expires_at": "2026-12-21T10:00:00+01:00",
    "court": "Gjykata e Rrethit Gjyqësor Elbasan",
    "reference": "UMM-123/2026",
}


async def test_protection_order_is_recorded_on_the_case(intake: Stack) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    response = await intake.intake.post(
        f"/v1/cases/{case['id']}/protection-orders",
        json=ORDER,
        headers=intake.auth("police", municipality, member_id="m-police"),
    )
    assert response.status_code == 201, response.text
    assert response.json()["kind"] == "immediate"
    body = (await intake.intake.get(f"/v1/cases/{case['id']}", headers=intake.auth("coordinator", municipality))).json()
    assert [(o["reference"], o["status"]) for o in body["protection_orders"]] == [("UMM-123/2026", "issued")]


@pytest.mark.parametrize(
    "change",
    [
        {"expires_at": "2026-11-20T10:00:00+01:00"},
        {"kind": "eviction"},
        {"status": "pending"},
        {"issued_at": None},
        {"surprise": 1},
    ],
)
async def test_bad_protection_order_is_422(intake: Stack, change: dict[str, object]) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    response = await intake.intake.post(
        f"/v1/cases/{case['id']}/protection-orders",
        json=ORDER | change,
        headers=intake.auth("coordinator", municipality),
    )
    assert response.status_code == 422, response.text


async def test_health_may_not_record_a_protection_order(intake: Stack) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    response = await intake.intake.post(
        f"/v1/cases/{case['id']}/protection-orders", json=ORDER, headers=intake.auth("health", municipality)
    )
    assert response.status_code == 403


async def test_consent_withdrawal_is_recorded_with_who_and_when(intake: Stack) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    coordinator = intake.auth("coordinator", municipality, sub="kvdhf-1")
    response = await intake.intake.post(
        f"/v1/cases/{case['id']}/consent", json={"withdraw": ["shelter"], "share_with": ["health"]}, headers=coordinator
    )
    assert response.status_code == 200, response.text
    consent = response.json()
    assert consent["share_with"] == ["health", "police", "social_services"]
    assert consent["withdrawn"] == ["shelter"]
    last = [r for r in consent["history"] if r["kind"] == "shelter"][-1]
    assert last["given"] is False and last["recorded_by_sub"] == "kvdhf-1" and last["recorded_by_role"] == "coordinator"
    body = (await intake.intake.get(f"/v1/cases/{case['id']}", headers=coordinator)).json()
    assert body["consent"]["withdrawn"] == ["shelter"]


async def test_consent_with_unknown_kind_or_nothing_is_422(intake: Stack) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    coordinator = intake.auth("coordinator", municipality)
    for body in ({"withdraw": ["press"]}, {}):
        response = await intake.intake.post(f"/v1/cases/{case['id']}/consent", json=body, headers=coordinator)
        assert response.status_code == 422


async def test_close_then_reopen_and_invalid_transitions_are_409(intake: Stack) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    coordinator = intake.auth("coordinator", municipality)
    url = f"/v1/cases/{case['id']}"
    assert (await intake.intake.post(f"{url}/reopen", headers=coordinator)).status_code == 409
    closed = await intake.intake.post(f"{url}/close", json={"reason": "moved away"}, headers=coordinator)
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    assert (await intake.intake.post(f"{url}/close", json={"reason": "again"}, headers=coordinator)).status_code == 409
    body = (await intake.intake.get(url, headers=coordinator)).json()
    assert body["status"] == "closed" and body["close_reason"] == "moved away" and body["closed_at"]
    listed = await intake.intake.get("/v1/cases", params={"status": "closed"}, headers=coordinator)
    assert [c["id"] for c in listed.json()["items"]] == [case["id"]]
    reopened = await intake.intake.post(f"{url}/reopen", headers=coordinator)
    assert reopened.status_code == 200 and reopened.json()["status"] == "open"
    assert (await intake.intake.get(url, headers=coordinator)).json()["closed_at"] is None


async def test_only_the_coordinator_closes(intake: Stack) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    response = await intake.intake.post(
        f"/v1/cases/{case['id']}/close",
        json={"reason": "x"},
        headers=intake.auth("police", municipality, member_id="m-police"),
    )
    assert response.status_code == 403
