"""Through intake: a high-risk report (CONTRACT §5) reaches the coordinator as a critical alert."""

from __future__ import annotations

from typing import Any

from tests.support import Stack, contract_report, new_municipality, wait_for


async def test_high_risk_report_at_intake_alerts_the_coordinator(ready: Stack) -> None:
    stack, town = ready, new_municipality()
    police = stack.auth("police", town, member_id="00000000-0000-4000-8000-000000000001")
    body = contract_report(town, risk_answers={"threats_to_kill": True})
    created = await stack.intake.post("/v1/cases", json=body, headers=police)
    assert created.status_code == 201, created.text
    case = created.json()
    assert case["risk_level"] == "high"
    coordinator = stack.auth("coordinator", town)

    async def alerts() -> list[dict[str, Any]]:
        response = await stack.notifications.get("/v1/inbox", headers=coordinator)
        return [a for a in response.json()["items"] if a["case_id"] == case["id"] and a["type"] == "case.high_risk"]

    [alert] = await wait_for(alerts, timeout=15, what="the coordinator's high-risk alert")
    assert alert["severity"] == "critical"
    assert case["case_number"] in alert["body"] and case["case_number"] in alert["title"]
    for private in ("Ermira", "Hoxha", "+355690000000", "Rruga e Testit"):
        assert private not in alert["title"] + alert["body"]
