"""A reassessment that would have lowered a case's level alerts the coordinator to review it (issue #11)."""

from __future__ import annotations

from tests.support import Stack, contract_report, new_municipality, wait_for


async def test_lowering_reassessment_alerts_the_coordinator_to_review(ready: Stack) -> None:
    stack = ready
    m = new_municipality()
    police = stack.auth("police", m, member_id="m-police")
    created = await stack.intake.post(
        "/v1/cases", json=contract_report(m, risk_answers={"threats_to_kill": True}), headers=police
    )
    assert created.status_code == 201, created.text
    case = created.json()
    answer = await stack.intake.post(
        f"/v1/cases/{case['id']}/risk-assessments", json={"risk_answers": {}}, headers=police
    )
    assert answer.json()["review_requested"] is True
    coordinator = {**stack.auth("coordinator", m), "Accept-Language": "en"}

    async def review_alert() -> list[dict[str, object]]:
        inbox = (await stack.notifications.get("/v1/inbox", headers=coordinator)).json()["items"]
        return [a for a in inbox if a["case_id"] == case["id"] and a["type"] == "case.risk_review"]

    alerts = await wait_for(review_alert, timeout=30, what="the review alert in the coordinator's inbox")
    assert len(alerts) == 1
    text = f"{alerts[0]['title']} {alerts[0]['body']}"
    assert case["case_number"] in text and "low" in text and "high" in text and "police" in text
    assert "Hoxha" not in str(alerts[0]) and "Ermira" not in str(alerts[0])
    albanian = (await stack.notifications.get("/v1/inbox", headers=stack.auth("coordinator", m))).json()["items"]
    assert any(a["type"] == "case.risk_review" and "Rivlerësim" in a["title"] for a in albanian)
