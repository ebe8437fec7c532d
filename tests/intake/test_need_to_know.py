"""Need-to-know under attack (issue #11): access that ends, consent that binds, no duplicate oracle,
reassessments that never lower a level, refused attempts in the audit trail."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from shared.events import INTAKE_TOPIC, REFERRAL_TOPIC, Envelope, make_event
from tests.intake.conftest import reported
from tests.support import Stack, contract_report, new_municipality, read_topic, wait_for


def referral_event(
    case: dict[str, Any], municipality: str, member_id: str, status: str, referral_id: str, *, created: bool = False
) -> Envelope:
    """`referral.created` (created=True) or `referral.status_changed` as referral publishes them."""
    data: dict[str, Any] = {
        "referral_id": referral_id,
        "case_id": case["id"],
        "case_number": case["case_number"],
        "to_member_id": member_id,
        "to_member_kind": "health",
        "status": status,
    }
    if created:
        data |= {"service": "health", "urgency": "normal", "reason": "need health"}
    else:
        data |= {"previous_status": "pending", "by_role": "health", "at": "2026-12-02T05:00:00+00:00"}
    return make_event(
        type_="referral.created" if created else "referral.status_changed",
        source="mkr/referral",
        subject=case["id"],
        municipality=municipality,
        data=data,
    )


async def send(stack: Stack, *events: Envelope) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.settings.kafka_bootstrap)
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(
                stack.settings.topic(REFERRAL_TOPIC), event.model_dump_json().encode(), key=event.subject.encode()
            )
    finally:
        await producer.stop()


async def read_status(stack: Stack, case_id: str, headers: dict[str, str]) -> int:
    return (await stack.intake.get(f"/v1/cases/{case_id}", headers=headers)).status_code


async def until_status(stack: Stack, case_id: str, headers: dict[str, str], status: int, what: str) -> None:
    async def probe() -> bool:
        return await read_status(stack, case_id, headers) == status

    await wait_for(probe, timeout=20, what=what)


async def trail(stack: Stack, municipality: str, case_id: str) -> list[dict[str, Any]]:
    response = await stack.intake.get(
        "/v1/audit", params={"case_id": case_id}, headers=stack.auth("coordinator", municipality)
    )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


# --- access that ends ----------------------------------------------------------------------------


async def test_declined_referral_ends_access(intake: Stack) -> None:
    """A declined referral was a way in that stayed open for ever: now the case answers 404 at once."""
    m = new_municipality()
    case = await reported(intake, m)
    member = f"m-health-{uuid.uuid4().hex[:6]}"
    health = intake.auth("health", m, member_id=member, sub="health-officer")
    referral = str(uuid.uuid4())
    await send(intake, referral_event(case, m, member, "pending", referral, created=True))
    await until_status(intake, case["id"], health, 200, "the referred institution to read the case")
    await send(intake, referral_event(case, m, member, "acknowledged", referral))
    await send(intake, referral_event(case, m, member, "declined", referral))
    await until_status(intake, case["id"], health, 404, "the decline to end the access")

    async def denial_audited() -> bool:
        entries = await trail(intake, m, case["id"])
        return any(e["action"] == "case.access_denied" and e["sub"] == "health-officer" for e in entries)

    await wait_for(denial_audited, timeout=10, what="the refused read in the audit trail")


async def test_cancelled_referral_ends_access(intake: Stack) -> None:
    m = new_municipality()
    case = await reported(intake, m)
    member = f"m-health-{uuid.uuid4().hex[:6]}"
    health = intake.auth("health", m, member_id=member)
    referral = str(uuid.uuid4())
    await send(intake, referral_event(case, m, member, "pending", referral, created=True))
    await until_status(intake, case["id"], health, 200, "the referred institution to read the case")
    await send(intake, referral_event(case, m, member, "cancelled", referral))
    await until_status(intake, case["id"], health, 404, "the cancellation to end the access")


async def test_late_created_after_cancelled_does_not_regrant_access(intake: Stack) -> None:
    """Events of one referral arriving out of order (a replay, a second partition) never reopen a door."""
    m = new_municipality()
    case = await reported(intake, m)
    member = f"m-health-{uuid.uuid4().hex[:6]}"
    marker = f"m-marker-{uuid.uuid4().hex[:6]}"
    health = intake.auth("health", m, member_id=member)
    referral = str(uuid.uuid4())
    await send(
        intake,
        referral_event(case, m, member, "cancelled", referral),
        referral_event(case, m, member, "pending", referral, created=True),
        referral_event(case, m, member, "acknowledged", referral),
        # Same key, so the same partition and after the others: once it applies, so did they.
        referral_event(case, m, marker, "pending", str(uuid.uuid4()), created=True),
    )
    await until_status(intake, case["id"], intake.auth("health", m, member_id=marker), 200, "the marker event")
    assert await read_status(intake, case["id"], health) == 404


async def test_every_open_or_completed_referral_lets_the_institution_read(intake: Stack) -> None:
    m = new_municipality()
    case = await reported(intake, m)
    member = f"m-health-{uuid.uuid4().hex[:6]}"
    health = intake.auth("health", m, member_id=member)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    await send(
        intake,
        referral_event(case, m, member, "pending", first, created=True),
        referral_event(case, m, member, "acknowledged", first),
        referral_event(case, m, member, "accepted", first),
        referral_event(case, m, member, "completed", first),
        # A second referral to the same institution, declined: the completed one still lets it read.
        referral_event(case, m, member, "pending", second, created=True),
        referral_event(case, m, member, "declined", second),
    )

    async def settled() -> bool:
        return await _access_rows(intake, case["id"]) == {first: "completed", second: "declined"}

    await wait_for(settled, timeout=20, what="both referrals' last statuses")
    assert await read_status(intake, case["id"], health) == 200


async def _access_rows(stack: Stack, case_id: str) -> dict[str, str]:
    sessions = stack.apps["intake"].state.runtime.sessions
    async with sessions() as session:
        rows = await session.execute(
            sa.text("SELECT referral_id::text, status FROM referral_access WHERE case_id = :c"), {"c": case_id}
        )
        return {referral_id: status for referral_id, status in rows.all()}


# --- consent that binds ----------------------------------------------------------------------------


async def test_referred_institution_cannot_change_consent(intake: Stack) -> None:
    """An institution that may read the case must not widen who else may (nor narrow it): 403, audited."""
    m = new_municipality()
    case = await reported(intake, m)  # by police, member m-police
    member = f"m-health-{uuid.uuid4().hex[:6]}"
    health = intake.auth("health", m, member_id=member, sub="health-consent")
    await send(intake, referral_event(case, m, member, "pending", str(uuid.uuid4()), created=True))
    await until_status(intake, case["id"], health, 200, "the referred institution to read the case")
    url = f"/v1/cases/{case['id']}/consent"
    refused = await intake.intake.post(url, json={"share_with": ["health", "ngo"]}, headers=health)
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    coordinator = intake.auth("coordinator", m)
    shown = (await intake.intake.get(f"/v1/cases/{case['id']}", headers=coordinator)).json()
    assert shown["consent"]["share_with"] == ["police", "shelter", "social_services"]  # unchanged
    reporter = intake.auth("police", m, member_id="m-police", sub="a-colleague")
    assert (await intake.intake.post(url, json={"withdraw": ["shelter"]}, headers=reporter)).status_code == 200
    assert (await intake.intake.post(url, json={"share_with": ["health"]}, headers=coordinator)).status_code == 200

    async def refusal_audited() -> bool:
        entries = await trail(intake, m, case["id"])
        return any(e["action"] == "access.forbidden" and e["sub"] == "health-consent" for e in entries)

    await wait_for(refusal_audited, timeout=10, what="the refused consent change in the audit trail")


# --- reassessments never lower the level -------------------------------------------------------


async def test_reassessment_by_an_institution_never_lowers_the_level(intake: Stack) -> None:
    """Lowering a high-risk case (to slip it off the coordinator's list) only asks the coordinator to review."""
    m = new_municipality()
    case = await reported(intake, m, risk_answers={"threats_to_kill": True})
    assert case["risk_level"] == "high"
    url = f"/v1/cases/{case['id']}/risk-assessments"
    reporter = intake.auth("police", m, member_id="m-police")
    answer = await intake.intake.post(url, json={"risk_answers": {"threats_to_kill": False}}, headers=reporter)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["risk_level"] == "high" and body["review_requested"] is True
    assert body["proposed_risk_level"] == "low"
    coordinator = intake.auth("coordinator", m)
    shown = (await intake.intake.get(f"/v1/cases/{case['id']}", headers=coordinator)).json()
    assert shown["risk_level"] == "high"
    assert [a["risk_level"] for a in shown["risk_assessments"]] == ["high", "low"]  # kept in the history
    assert shown["risk_assessments"][-1]["assessed_by_role"] == "police"

    def review_of_case(values: list[bytes]) -> list[Envelope]:
        parsed = [Envelope.model_validate_json(v) for v in values]
        return [e for e in parsed if e.subject == case["id"] and e.type == "case.risk_review_requested"]

    values = await read_topic(intake.settings, INTAKE_TOPIC, until=lambda v: bool(review_of_case(v)))
    found = review_of_case(values)
    assert len(found) == 1, [e.type for e in map(Envelope.model_validate_json, values)]
    assert found[0].data == {
        "case_id": case["id"],
        "case_number": case["case_number"],
        "risk_level": "high",
        "proposed_risk_level": "low",
        "assessed_by_role": "police",
    }
    # A rise by an institution still applies at once; the coordinator may lower.
    lowered = await intake.intake.post(url, json={"risk_answers": {}}, headers=coordinator)
    assert lowered.json()["risk_level"] == "low" and lowered.json()["review_requested"] is False
    raised = await intake.intake.post(url, json={"risk_answers": {"strangulation": True}}, headers=reporter)
    assert raised.json()["risk_level"] == "high" and raised.json()["review_requested"] is False


# --- no oracle ---------------------------------------------------------------------------------


async def test_possible_duplicates_never_reveal_a_case_the_caller_cannot_read(intake: Stack) -> None:
    """Reporting a name must not tell an institution that this person already has a case elsewhere."""
    m = new_municipality()
    first = await reported(intake, m)  # police m-police
    response = await intake.intake.post(
        "/v1/cases", json=_report(m), headers=intake.auth("health", m, member_id="m-health-dup")
    )
    assert response.status_code == 201, response.text
    assert response.json()["possible_duplicates"] == []  # a case of the police, not readable by health
    same_institution = await intake.intake.post(
        "/v1/cases", json=_report(m), headers=intake.auth("police", m, member_id="m-police", sub="other-officer")
    )
    assert first["id"] in [d["id"] for d in same_institution.json()["possible_duplicates"]]
    coordinator = await intake.intake.post("/v1/cases", json=_report(m), headers=intake.auth("coordinator", m))
    every = {d["id"] for d in coordinator.json()["possible_duplicates"]}
    assert {first["id"], response.json()["id"], same_institution.json()["id"]} <= every
    # Once referred (and while the referral is open), the institution may read the case, so it is listed.
    await send(intake, referral_event(first, m, "m-health-dup", "pending", str(uuid.uuid4()), created=True))
    await until_status(intake, first["id"], intake.auth("health", m, member_id="m-health-dup"), 200, "the referral")
    again = await intake.intake.post(
        "/v1/cases", json=_report(m), headers=intake.auth("health", m, member_id="m-health-dup")
    )
    listed = {d["id"] for d in again.json()["possible_duplicates"]}
    assert first["id"] in listed and same_institution.json()["id"] not in listed


def _report(municipality: str) -> dict[str, Any]:
    return contract_report(municipality)


# --- refused attempts are audited -----------------------------------------------------------------


async def test_forbidden_role_attempt_is_in_the_audit_trail(intake: Stack) -> None:
    """A 403 used to leave no trace: probing a case with a role that may not read it is now on record."""
    m = new_municipality()
    case = await reported(intake, m)
    shelter = intake.auth("shelter_staff", m, sub="shelter-prober", shelter_id=str(uuid.uuid4()))
    assert (await intake.intake.get(f"/v1/cases/{case['id']}", headers=shelter)).status_code == 403
    admin = intake.auth("admin", m, sub="admin-prober")
    close = await intake.intake.post(f"/v1/cases/{case['id']}/close", json={"reason": "x"}, headers=admin)
    assert close.status_code == 403

    async def recorded() -> list[tuple[str, str]]:
        entries = await trail(intake, m, case["id"])
        return [(e["sub"], e["role"]) for e in entries if e["action"] == "access.forbidden"]

    found: list[tuple[str, str]] = await wait_for(lambda: _two(recorded), timeout=10, what="both refusals")
    assert sorted(found) == [("admin-prober", "admin"), ("shelter-prober", "shelter_staff")]


async def _two(probe: Any) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = await probe()
    return found if len(found) >= 2 else []
