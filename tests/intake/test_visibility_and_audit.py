"""Who sees a case (CONTRACT §2), personal data encrypted at rest, and the append-only audit trail."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from shared import db
from shared.events import REFERRAL_TOPIC, make_event
from tests.intake.conftest import reported
from tests.support import Stack, new_municipality, wait_for


async def test_coordinator_sees_everything_of_the_case(intake: Stack) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    body = (await intake.intake.get(f"/v1/cases/{case['id']}", headers=intake.auth("coordinator", municipality))).json()
    assert body["survivor"] == {
        "first_name": "Ermira",
        "last_name": "Hoxha",
        "sex": "female",
        "date_of_birth": "1991-04-02",
        "age": body["survivor"]["age"],
        "age_group": body["survivor"]["age_group"],
        "ethnicity": "roma",
        "phone": "+355690000000",
        "address": "Rruga e Testit 1",
        "disability": False,
    }
    assert body["survivor"]["age_group"] == "25-39"
    assert body["incident"]["description"] == "invented narrative for tests"
    assert body["incident"]["violence_types"] == ["physical", "psychological"]
    assert body["children"] == [{"sex": "male", "age": 7}]
    assert body["needs"] == ["legal_aid", "shelter"]
    assert body["consent"]["share_with"] == ["police", "shelter", "social_services"]
    assert body["risk_assessments"][0]["risk_level"] == "low"


async def test_reporter_reads_own_case_and_another_institution_gets_404(intake: Stack) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    url = f"/v1/cases/{case['id']}"
    same_institution = intake.auth("police", municipality, member_id="m-police", sub="another-officer")
    own = await intake.intake.get(url, headers=same_institution)
    assert own.status_code == 200 and own.json()["incident"]["description"]
    other = await intake.intake.get(url, headers=intake.auth("health", municipality, member_id="m-health"))
    assert other.status_code == 404


@pytest.mark.parametrize("role", ["shelter_staff", "admin", "auditor", "housing_officer"])
async def test_roles_without_identity_access_get_403_on_case_reads(intake: Stack, role: str) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    response = await intake.intake.get(f"/v1/cases/{case['id']}", headers=intake.auth(role, municipality))
    assert response.status_code == 403
    assert (await intake.intake.get("/v1/cases", headers=intake.auth(role, municipality))).status_code == 403


async def test_another_municipality_gets_404(intake: Stack) -> None:
    case = await reported(intake, new_municipality())
    other = new_municipality()
    for path in (f"/v1/cases/{case['id']}", f"/v1/audit?case_id={case['id']}"):
        response = await intake.intake.get(path, headers=intake.auth("coordinator", other))
        assert response.status_code == 404
    response = await intake.intake.post(
        f"/v1/cases/{case['id']}/close", json={"reason": "x"}, headers=intake.auth("coordinator", other)
    )
    assert response.status_code == 404


async def test_non_uuid_case_id_is_422(intake: Stack) -> None:
    response = await intake.intake.get("/v1/cases/not-a-uuid", headers=intake.auth("coordinator", new_municipality()))
    assert response.status_code == 422


async def test_referred_institution_reads_the_case_without_the_narrative(intake: Stack) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    health = intake.auth("health", municipality, member_id="m-health-7")
    url = f"/v1/cases/{case['id']}"
    assert (await intake.intake.get(url, headers=health)).status_code == 404
    event = make_event(
        type_="referral.created",
        source="mkr/referral",
        subject=str(uuid.uuid4()),
        municipality=municipality,
        data={
            "referral_id": str(uuid.uuid4()),
            "case_id": case["id"],
            "case_number": case["case_number"],
            "to_member_id": "m-health-7",
            "to_member_kind": "health",
            "service": "health",
            "urgency": "normal",
            "reason": "need health",
            "status": "pending",
        },
    )
    producer = AIOKafkaProducer(bootstrap_servers=intake.settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            intake.settings.topic(REFERRAL_TOPIC), event.model_dump_json().encode(), key=case["id"].encode()
        )
    finally:
        await producer.stop()

    async def readable() -> bool:
        return (await intake.intake.get(url, headers=health)).status_code == 200

    await wait_for(readable, timeout=20, what="the referred institution to read the case")
    body = (await intake.intake.get(url, headers=health)).json()
    assert body["survivor"]["last_name"] == "Hoxha"
    assert body["incident"]["description"] is None


async def test_personal_data_is_encrypted_at_rest(intake: Stack) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    engine = db.create_engine(intake.settings, "intake")
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.text("SELECT c::text FROM cases c WHERE id = :id"), {"id": case["id"]})).all()
            index = (
                await conn.execute(
                    sa.text("SELECT s::text FROM survivor_index s WHERE case_id = :id"), {"id": case["id"]}
                )
            ).all()
    finally:
        await engine.dispose()
    stored = rows[0][0] + index[0][0]
    for secret in (
        "Ermira",
        "Hoxha",
        "ermira",
        "hoxha",
        "+355690000000",
        "Rruga e Testit",
        "1991-04-02",
        "invented narrative",
    ):
        assert secret not in stored


async def test_audit_trail_lists_every_read_and_write(intake: Stack) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    coordinator = intake.auth("coordinator", municipality, sub="kvdhf")
    await intake.intake.get(f"/v1/cases/{case['id']}", headers=coordinator)
    await intake.intake.post(f"/v1/cases/{case['id']}/risk-assessments", json={"risk_answers": {}}, headers=coordinator)
    await intake.intake.get("/v1/cases", headers=coordinator)
    trail = await intake.intake.get("/v1/audit", params={"case_id": case["id"]}, headers=coordinator)
    assert trail.status_code == 200
    entries = trail.json()["items"]
    assert [e["action"] for e in entries] == ["case.reported", "case.read", "case.risk_assessed", "case.listed"]
    assert entries[0]["role"] == "police" and entries[1]["sub"] == "kvdhf"
    assert set(entries[0]) == {"at", "sub", "role", "action", "case_id"}
    auditor = await intake.intake.get("/v1/audit", params={"case_id": case["id"]}, headers=intake.auth("auditor", "*"))
    assert auditor.status_code == 200 and len(auditor.json()["items"]) == 4
    police = await intake.intake.get(
        "/v1/audit", params={"case_id": case["id"]}, headers=intake.auth("police", municipality)
    )
    assert police.status_code == 403


async def test_audit_rows_cannot_be_changed_or_deleted(intake: Stack) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    engine = db.create_engine(intake.settings, "intake")
    try:
        for statement in (
            "UPDATE audit_log SET sub = 'someone' WHERE case_id = :id",
            "DELETE FROM audit_log WHERE case_id = :id",
        ):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                async with engine.begin() as conn:
                    await conn.execute(sa.text(statement), {"id": case["id"]})
    finally:
        await engine.dispose()


async def test_a_read_whose_audit_row_fails_is_refused(intake: Stack) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    engine = db.create_engine(intake.settings, "intake")
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "CREATE OR REPLACE FUNCTION test_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    "BEGIN IF NEW.action = 'case.read' AND NEW.sub = 'blocked-reader' THEN "
                    "RAISE EXCEPTION 'audit down'; END IF; RETURN NEW; END $$"
                )
            )
            await conn.execute(
                sa.text(
                    "CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit_log "
                    "FOR EACH ROW EXECUTE FUNCTION test_refuse_audit()"
                )
            )
        response = await intake.intake.get(
            f"/v1/cases/{case['id']}", headers=intake.auth("coordinator", municipality, sub="blocked-reader")
        )
        assert response.status_code == 500
        assert "Hoxha" not in response.text
        # Every unexpected 500 closes the connection (caught by the request middleware here, not the handler).
        assert response.headers["connection"] == "close"
    finally:
        async with engine.begin() as conn:
            await conn.execute(sa.text("DROP TRIGGER IF EXISTS test_refuse_audit ON audit_log"))
        await engine.dispose()


async def test_refused_attempts_on_a_case_are_in_its_audit_trail_and_look_like_a_missing_case(intake: Stack) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    url = f"/v1/cases/{case['id']}"
    elsewhere = intake.auth("coordinator", new_municipality(), sub="snoop-1")
    not_referred = intake.auth("health", municipality, sub="snoop-2", member_id="m-health")
    missing = await intake.intake.get(f"/v1/cases/{uuid.uuid4()}", headers=elsewhere)
    for headers in (elsewhere, not_referred):
        read = await intake.intake.get(url, headers=headers)
        assert read.status_code == 404
        # The same answer as for a case that does not exist, but for the path it names.
        assert {k: v for k, v in read.json().items() if k != "instance"} == {
            k: v for k, v in missing.json().items() if k != "instance"
        }
        same_headers = {"content-type", "content-length"}
        assert {k: read.headers.get(k) for k in same_headers} == {k: missing.headers.get(k) for k in same_headers}
    write = await intake.intake.post(f"{url}/close", json={"reason": "x"}, headers=elsewhere)
    assert write.status_code == 404
    coordinator = intake.auth("coordinator", municipality)
    trail = await intake.intake.get("/v1/audit", params={"case_id": case["id"]}, headers=coordinator)
    denied = [(e["sub"], e["role"]) for e in trail.json()["items"] if e["action"] == "case.access_denied"]
    assert denied == [("snoop-1", "coordinator"), ("snoop-2", "health"), ("snoop-1", "coordinator")]
    shown = await intake.intake.get(url, headers=coordinator)
    assert shown.json()["status"] == "open"  # the refused close changed nothing
