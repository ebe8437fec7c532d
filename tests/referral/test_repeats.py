"""Repeats end to end (CONTRACT §10): the coordinator links cases at intake; referral's summary counts the
repeats, its dashboard counts the possible duplicates awaiting her decision, and the third case of the same
person within 12 months is routed as high risk (MARAC's "potential escalation")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.referral.helpers import add_member, referrals_of, routing_of
from tests.support import Stack, contract_report, new_municipality, wait_for


async def _report(stack: Stack, m: str) -> dict[str, Any]:
    consent = {"share_with": ["police", "social_services"]}
    body = contract_report(m, source="health", children=[], needs=[], consent=consent)
    response = await stack.intake.post("/v1/cases", json=body, headers=stack.auth("coordinator", m))
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _link(stack: Stack, m: str, case_id: str, other_id: str) -> dict[str, Any]:
    response = await stack.intake.post(
        f"/v1/cases/{case_id}/links", json={"case_id": other_id, "relation": "same_person"},
        headers=stack.auth("coordinator", m),
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _until(stack: Stack, m: str, want: dict[str, int]) -> None:
    """Wait until the summary's repeats and the dashboard's count are `want`."""
    today = datetime.now(UTC).date().isoformat()
    coordinator = stack.auth("coordinator", m)

    async def probe() -> bool:
        summary = await stack.referral.get(
            "/v1/reports/summary", params={"from": today, "to": today}, headers=coordinator
        )
        dashboard = await stack.referral.get("/v1/dashboard", headers=coordinator)
        assert summary.status_code == 200 and dashboard.status_code == 200
        seen = {
            "repeat": summary.json()["cases"]["repeat"],
            "awaiting": dashboard.json()["possible_duplicates_awaiting_decision"]["count"],
        }
        return seen == want

    await wait_for(probe, timeout=20, what=f"summary and dashboard at {want}")


async def test_links_make_repeats_counted_in_the_summary_and_the_third_case_routes_high(stack: Stack) -> None:
    m = new_municipality()
    police = await add_member(stack, m, "police")
    await add_member(stack, m, "social_services")
    first, second, third = [await _report(stack, m) for _ in range(3)]
    assert [len(c["possible_duplicates"]) for c in (first, second, third)] == [0, 1, 2]
    for case in (first, second, third):
        await routing_of(stack, m, case["id"])
    await _until(stack, m, {"repeat": 0, "awaiting": 3})  # pairs: 2-1, 3-1, 3-2

    assert (await _link(stack, m, second["id"], first["id"]))["repeat"] is True
    await _until(stack, m, {"repeat": 1, "awaiting": 2})
    # Low risk, reported by health: no police referral so far.
    assert {r["to_member_kind"] for r in await referrals_of(stack, m, third["id"], 1)} == {"social_services"}

    linked = await _link(stack, m, third["id"], second["id"])
    assert linked["risk_level"] == "high" and linked["repeat_of"] == second["id"]
    await _until(stack, m, {"repeat": 2, "awaiting": 0})  # 3-1 is decided through 2
    found = await referrals_of(stack, m, third["id"], 2)
    by_kind = {r["to_member_kind"]: r for r in found}
    assert by_kind["police"]["to_member_id"] == police["id"] and by_kind["police"]["urgency"] == "emergency"
    # The first two stay as they were: a repeat is not an escalation.
    assert [r["to_member_kind"] for r in await referrals_of(stack, m, second["id"], 1)] == ["social_services"]

    undone = await stack.intake.delete(
        f"/v1/cases/{third['id']}/links/{second['id']}", headers=stack.auth("coordinator", m)
    )
    assert undone.status_code == 200
    await _until(stack, m, {"repeat": 1, "awaiting": 2})  # 3-1 and 3-2 await her decision again
