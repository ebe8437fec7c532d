"""End to end through intake: a case reported with the full contract body (CONTRACT §5) is routed."""

from __future__ import annotations

from tests.referral.helpers import add_member, referrals_of
from tests.support import Stack, contract_report, new_municipality


async def test_high_risk_case_with_children_reported_at_intake_is_referred_by_the_rules(stack: Stack) -> None:
    m = new_municipality()
    members = {kind: await add_member(stack, m, kind) for kind in ("social_services", "child_protection", "shelter")}
    police_member = await add_member(stack, m, "police")
    body = contract_report(m, risk_answers={"threats_to_kill": True, "strangulation": False})
    created = await stack.intake.post(
        "/v1/cases", json=body, headers=stack.auth("police", m, member_id=police_member["id"])
    )
    assert created.status_code == 201, created.text
    case = created.json()
    assert case["risk_level"] == "high"
    found = await referrals_of(stack, m, case["id"], 3)
    by_kind = {r["to_member_kind"]: r for r in found}
    # Consent (police, social_services, shelter) + the child-at-risk exception; police reported it itself.
    assert set(by_kind) == {"social_services", "child_protection", "shelter"}
    assert all(by_kind[k]["to_member_id"] == members[k]["id"] for k in by_kind)
    assert by_kind["child_protection"]["legal_exception"] == "child_at_risk"
    assert {r["urgency"] for r in found} == {"emergency"}
    assert all(r["case_number"] == case["case_number"] for r in found)
