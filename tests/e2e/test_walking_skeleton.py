"""A case reported at intake becomes a referral and an alert, through the real broker."""

from __future__ import annotations

from tests.support import Stack, new_municipality, wait_for


def report_body(municipality: str = "elbasan") -> dict[str, object]:
    return {
        "municipality": municipality,
        "source": "police",
        "survivor": {"first_name": "Drita", "last_name": "Kola", "sex": "female"},
        "consent": {"share_with": ["social_services"], "given_at": "2026-11-21T09:00:00+01:00"},
    }


async def test_reported_case_reaches_referral_and_coordinator_inbox(stack: Stack) -> None:
    municipality = new_municipality()
    # Routing refers to members of the directory: the municipality's social services first.
    member = await stack.referral.post(
        "/v1/members",
        json={"name": "Social services office", "kind": "social_services", "municipality": municipality},
        headers=stack.auth("admin", municipality),
    )
    assert member.status_code == 201, member.text
    police = stack.auth("police", municipality, member_id="m-police")
    created = await stack.intake.post("/v1/cases", json=report_body(municipality), headers=police)
    assert created.status_code == 201, created.text
    case = created.json()

    coordinator = stack.auth("coordinator", municipality)

    async def referrals() -> list[dict[str, object]]:
        response = await stack.referral.get("/v1/referrals", params={"case_id": case["id"]}, headers=coordinator)
        assert response.status_code == 200
        return list(response.json()["items"])

    found = await wait_for(referrals, timeout=10, what="a referral for the reported case")
    assert found[0]["case_number"] == case["case_number"]

    async def alerts() -> list[dict[str, object]]:
        response = await stack.notifications.get("/v1/inbox", headers=coordinator)
        assert response.status_code == 200
        return [a for a in response.json()["items"] if a["case_id"] == case["id"]]

    inbox = await wait_for(alerts, timeout=10, what="an inbox alert for the case")
    assert case["case_number"] in inbox[0]["body"]
