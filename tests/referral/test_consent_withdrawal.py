"""A withdrawal of consent ends what it covered (issue #11), through intake, referral and back."""

from __future__ import annotations

from typing import Any

from tests.referral.helpers import add_member, referrals_of
from tests.support import Stack, contract_report, new_municipality, wait_for


async def test_consent_withdrawal_cancels_referrals_and_ends_access(stack: Stack) -> None:
    """Withdrawn consent used to leave every referral, and so every institution's read access, in place.
    Now the referrals to the withdrawn kinds are cancelled (reason `consent_withdrawn`) and the case is 404
    to them — except where the law allows a referral without consent, which stays and says so."""
    m = new_municipality()
    members = {k: await add_member(stack, m, k) for k in ("social_services", "police", "child_protection", "shelter")}
    body = contract_report(
        m,
        source="social_services",
        risk_answers={"threats_to_kill": True},  # high: police may be referred without consent
        consent={"share_with": ["police", "social_services", "shelter"]},
    )
    coordinator = stack.auth("coordinator", m)
    created = await stack.intake.post("/v1/cases", json=body, headers=coordinator)
    assert created.status_code == 201, created.text
    case = created.json()
    found = await referrals_of(stack, m, case["id"], 4, timeout=30)
    by_kind = {r["to_member_kind"]: r for r in found}
    assert set(by_kind) == {"social_services", "police", "child_protection", "shelter"}
    readers = {k: stack.auth(k, m, member_id=members[k]["id"]) for k in ("social_services", "police")}
    url = f"/v1/cases/{case['id']}"

    async def reads(kind: str, status: int) -> bool:
        return (await stack.intake.get(url, headers=readers[kind])).status_code == status

    await wait_for(lambda: reads("social_services", 200), timeout=20, what="social services to read the case")
    await wait_for(lambda: reads("police", 200), timeout=20, what="police to read the case")

    withdrawn = await stack.intake.post(
        f"{url}/consent", json={"withdraw": ["social_services", "police", "shelter"]}, headers=coordinator
    )
    assert withdrawn.status_code == 200, withdrawn.text

    async def referral(kind: str) -> dict[str, Any]:
        response = await stack.referral.get(f"/v1/referrals/{by_kind[kind]['id']}", headers=coordinator)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def cancelled() -> bool:
        statuses = [(await referral(k))["status"] for k in ("social_services", "shelter")]
        return statuses == ["cancelled", "cancelled"]

    await wait_for(cancelled, timeout=30, what="the referrals to the withdrawn kinds to be cancelled")
    for kind in ("social_services", "shelter"):
        last = (await referral(kind))["history"][-1]
        assert (last["status"], last["reason"], last["by"]) == ("cancelled", "consent_withdrawn", "system:consent")
    police = await referral("police")
    assert police["status"] == "pending"  # threat to life: the law's exception stays
    assert police["history"][-1]["reason"] == "consent_withdrawn: kept by the legal exception threat_to_life"
    assert police["legal_exception"] == "threat_to_life"
    assert (await referral("child_protection"))["status"] == "pending"  # consent for it was never withdrawn

    await wait_for(lambda: reads("social_services", 404), timeout=20, what="the withdrawal to end the access")
    assert await reads("police", 200)
