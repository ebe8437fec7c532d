"""What intake publishes, read back from the real broker: coded facts only, never identities."""

from __future__ import annotations

import json
from typing import Any

from shared.events import INTAKE_TOPIC
from tests.intake.conftest import reported
from tests.support import Stack, new_municipality, read_topic

PERSONAL = ("Ermira", "Hoxha", "+355690000000", "Rruga e Testit", "1991-04-02", "invented narrative", "moved away")
CASE_REPORTED_FIELDS = {
    "case_id",
    "case_number",
    "source",
    "reported_at",
    "risk_level",
    "sex",
    "age_group",
    "ethnicity",
    "disability",
    "violence_types",
    "perpetrator_relationship",
    "needs",
    "children_count",
    "children_ages",
    "consent_share_with",
    "reported_by_role",
    "reported_by_member_id",
    "pending_duplicates",
}


async def _read_topic(
    stack: Stack, subject: str, want: int, timeout: float = 20
) -> tuple[list[dict[str, Any]], list[bytes]]:
    def mine(values: list[bytes]) -> list[dict[str, Any]]:
        return [e for e in (json.loads(v or b"{}") for v in values) if e.get("subject") == subject]

    raw = await read_topic(stack.settings, INTAKE_TOPIC, until=lambda v: len(mine(v)) >= want, timeout=timeout)
    return mine(raw), raw


async def test_events_carry_coded_facts_and_no_personal_data(intake: Stack) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    coordinator = intake.auth("coordinator", municipality)
    url = f"/v1/cases/{case['id']}"
    await intake.intake.post(
        f"{url}/risk-assessments", json={"risk_answers": {"strangulation": True}}, headers=coordinator
    )
    await intake.intake.post(
        f"{url}/risk-assessments", json={"risk_answers": {"threats_to_kill": True}}, headers=coordinator
    )
    order = {
        "kind": "protection",
        "status": "issued",
        "issued_at": "2026-11-21T10:00:00+01:00",
        "expires_at": "2027-05-21T10:00:00+01:00",
        "court": "Gjykata Elbasan",
        "reference": "UM-1",
    }
    await intake.intake.post(f"{url}/protection-orders", json=order, headers=coordinator)
    await intake.intake.post(f"{url}/consent", json={"withdraw": ["shelter"]}, headers=coordinator)
    await intake.intake.post(f"{url}/close", json={"reason": "moved away"}, headers=coordinator)
    await intake.intake.post(f"{url}/reopen", headers=coordinator)

    events, raw = await _read_topic(intake, case["id"], want=6)
    types = [e["type"] for e in events]
    # The second assessment keeps the level high: no event for it.
    assert types == [
        "case.reported",
        "case.risk_assessed",
        "case.protection_order_recorded",
        "case.consent_changed",
        "case.closed",
        "case.reopened",
    ]
    reported_event = events[0]
    assert set(reported_event) == {
        "specversion", "id", "type", "source", "time", "subject", "municipality", "schemaversion", "datacontenttype",
        "data",
    }  # fmt: skip
    assert reported_event["source"] == "mkr/intake" and reported_event["municipality"] == municipality
    data = reported_event["data"]
    assert set(data) == CASE_REPORTED_FIELDS
    assert data["age_group"] == "25-39" and data["children_count"] == 1 and data["children_ages"] == [7]
    assert data["consent_share_with"] == ["police", "shelter", "social_services"]
    assert data["reported_by_role"] == "police" and data["reported_by_member_id"] == "m-police"
    assessed = events[1]["data"]
    assert (assessed["risk_level"], assessed["previous_risk_level"], assessed["red_flags"]) == (
        "high",
        "low",
        ["strangulation"],
    )
    assert events[2]["data"]["expires_at"].startswith("2027-05-21")
    assert events[3]["data"]["withdrawn"] == ["shelter"]
    assert "reason" not in events[4]["data"]
    assert "court" not in events[2]["data"]  # free text (CONTRACT §3): no event carries it
    for value in raw:
        text = value.decode()
        for secret in PERSONAL:
            assert secret not in text, secret
