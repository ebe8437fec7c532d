"""Attacks on what the referral service stores and shows (issue #11): a stolen database dump, free
text smuggled into coded fields, directory writes that poison every later read, unslugged names."""

from __future__ import annotations

import importlib.util
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from shared.sealed import seal_stored
from tests.referral.helpers import add_member, produce, published, reported, routing_of
from tests.support import Stack, dump_database, new_municipality

MIGRATIONS = Path(__file__).parents[2] / "services" / "referral" / "migrations" / "versions"


def _migration(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, MIGRATIONS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _routed_case(stack: Stack, producer: AIOKafkaProducer, m: str, **facts: Any) -> dict[str, Any]:
    data = reported(m, **facts)
    await produce(producer, stack.settings, "case.reported", m, data)
    await routing_of(stack, m, data["case_id"])
    return data


async def test_database_dump_shows_no_referral_free_text(stack: Stack, producer: AIOKafkaProducer) -> None:
    m = new_municipality()
    legal = await add_member(stack, m, "legal_aid")
    ngo = await add_member(stack, m, "ngo")
    health = await add_member(stack, m, "health")
    case = await _routed_case(stack, producer, m, consent_share_with=["ngo", "health"])
    coordinator = stack.auth("coordinator", m)
    secrets = {
        "note": "NOTE-7f3a she hides at her sister's flat",
        "override": "OVERRIDE-91c2 survivor agreed by phone",
        "decline": "DECLINE-44be no interpreter this month",
        "outcome": "OUTCOME-0d17 counselling finished, moved away",
        "action": "ACTION-5e88 escort her to the court hearing",
    }
    first = await stack.referral.post(
        "/v1/referrals",
        json={"case_id": case["case_id"], "to_member_id": legal["id"], "urgency": "high", "service": "legal_aid",
              "note": secrets["note"], "consent_override_reason": secrets["override"]},
        headers=coordinator,
    )  # fmt: skip
    assert first.status_code == 201, first.text
    assert first.json()["note"] == secrets["note"] and first.json()["consent_override_reason"] == secrets["override"]
    declined = await stack.referral.post(
        "/v1/referrals",
        json={"case_id": case["case_id"], "to_member_id": ngo["id"], "urgency": "normal", "service": "psychological"},
        headers=coordinator,
    )
    assert declined.status_code == 201, declined.text
    ngo_staff = stack.auth("ngo", m, member_id=ngo["id"])
    acknowledged = await stack.referral.post(f"/v1/referrals/{declined.json()['id']}/acknowledge", headers=ngo_staff)
    assert acknowledged.status_code == 200, acknowledged.text
    answer = await stack.referral.post(
        f"/v1/referrals/{declined.json()['id']}/decline", json={"reason": secrets["decline"]}, headers=ngo_staff
    )
    assert answer.status_code == 200 and answer.json()["decline_reason"] == secrets["decline"]
    completed = await stack.referral.post(
        "/v1/referrals",
        json={"case_id": case["case_id"], "to_member_id": health["id"], "urgency": "normal", "service": "health"},
        headers=coordinator,
    )
    health_staff = stack.auth("health", m, member_id=health["id"])
    for action, body in (("acknowledge", None), ("accept", None), ("complete", {"outcome": secrets["outcome"]})):
        answer = await stack.referral.post(
            f"/v1/referrals/{completed.json()['id']}/{action}", json=body, headers=health_staff
        )
        assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"] == secrets["outcome"]
    meeting = await stack.referral.post(
        "/v1/etn-meetings",
        json={"municipality": m, "scheduled_for": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
              "case_ids": [case["case_id"]], "member_ids": [health["id"]]},
        headers=coordinator,
    )  # fmt: skip
    minutes = await stack.referral.post(
        f"/v1/etn-meetings/{meeting.json()['id']}/minutes",
        json={"attended_member_ids": [health["id"]],
              "decisions": [{"case_id": case["case_id"], "action": secrets["action"],
                             "responsible_member_id": health["id"], "due_date": "2030-01-01"}]},
        headers=coordinator,
    )  # fmt: skip
    assert minutes.status_code == 201 and minutes.json()["actions"][0]["action"] == secrets["action"]
    plan = await stack.referral.get(f"/v1/cases/{case['case_id']}/plan", headers=coordinator)
    assert [a["action"] for a in plan.json()["actions"]] == [secrets["action"]]
    listed = await stack.referral.get("/v1/referrals", params={"case_id": case["case_id"]}, headers=coordinator)
    shown = json.dumps(listed.json()["items"])
    assert all(secrets[k] in shown for k in ("note", "override", "decline", "outcome"))

    dump = await dump_database(stack, "referral")
    assert case["case_id"] in dump  # the dump does hold this case's rows
    for secret in secrets.values():
        assert secret not in dump
        assert secret.split()[0] not in dump
    # Nor do the events it published (the outbox is part of the dump above; the topic is checked too).
    events = await published(stack, "referral.created", case_id=case["case_id"])
    assert len(events) == 3 and not any(s.split()[0] in json.dumps(events) for s in secrets.values())


async def test_plaintext_stored_before_sealing_is_sealed_by_the_migration(
    stack: Stack, producer: AIOKafkaProducer
) -> None:
    m = new_municipality()
    legal = await add_member(stack, m, "legal_aid")
    case = await _routed_case(stack, producer, m, consent_share_with=["legal_aid"])
    coordinator = stack.auth("coordinator", m)
    created = await stack.referral.post(
        "/v1/referrals",
        json={"case_id": case["case_id"], "to_member_id": legal["id"], "urgency": "normal", "note": "sealed-now"},
        headers=coordinator,
    )
    referral_id = created.json()["id"]
    engine = stack.apps["referral"].state.runtime.engine
    old_note = "OLDNOTE-3b9d written by the first release"
    async with engine.begin() as conn:  # a row as the first release stored it: plaintext
        await conn.execute(sa.text("UPDATE referrals SET note = :n WHERE id = :id"), {"n": old_note, "id": referral_id})
    assert old_note in await dump_database(stack, "referral")
    fields = _migration("20261202_0003_sealed_text").SEALED
    sealer = stack.apps["referral"].state.sealer
    async with engine.begin() as conn:
        for table, columns in fields.items():
            await conn.run_sync(lambda c, t=table, cols=columns: seal_stored(c, sealer, t, cols))
        again = await conn.run_sync(lambda c: seal_stored(c, sealer, "referrals", fields["referrals"]))
    assert again == 0  # already sealed values are left alone
    assert old_note not in await dump_database(stack, "referral")
    shown = await stack.referral.get(f"/v1/referrals/{referral_id}", headers=coordinator)
    assert shown.status_code == 200 and shown.json()["note"] == old_note


async def test_referral_service_free_text_is_refused(stack: Stack, producer: AIOKafkaProducer) -> None:
    m = new_municipality()
    legal = await add_member(stack, m, "legal_aid")
    case = await _routed_case(stack, producer, m, consent_share_with=["legal_aid"])
    body = {"case_id": case["case_id"], "to_member_id": legal["id"], "urgency": "normal",
            "service": "hide her from her husband Arben"}  # fmt: skip
    refused = await stack.referral.post("/v1/referrals", json=body, headers=stack.auth("coordinator", m))
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"] == ["body", "service"]
    for coded in ("legal_aid", "protection_order"):  # a member kind, a need
        body["service"] = coded
        created = await stack.referral.post("/v1/referrals", json=body, headers=stack.auth("coordinator", m))
        assert created.status_code in (201, 409), created.text
        assert created.status_code == 409 or created.json()["service"] == coded


# --- the fuzzer's 500 and the data it left behind ---------------------------------------------------

ACCEPTED_EXTREMES: list[dict[str, Any]] = [
    {"name": "0", "contact": {"email": "a@b.c", "phone": "000"}},
    {"name": "x" * 200, "services": ["s" * 120] * 3, "contact": {"email": f"{'a' * 240}@b.cd", "phone": "0" * 15}},
    {"name": "Zyra e Mbrojtjes së Fëmijëve 🛡", "contact": {"email": "zyra@bashkia.gov.al",
                                                          "phone": "+355 (4) 222-333"}},
    {"name": "Qendra Sociale", "services": ["këshillim"], "contact": {"email": "é@ë.al", "phone": "+1 (2) 3"}},
    {"name": "\u00a0\u200bspaces", "contact": {}},
]

REFUSED_EXTREMES: list[dict[str, Any]] = [
    {"contact": {"email": "a@b.c\x00"}},
    {"contact": {"email": "a\x01@b.c"}},
    {"contact": {"email": "a@b.c\x7f"}},
    {"contact": {"email": "a@b.c\u2028"}},
    {"contact": {"email": "a@b.c\x85"}},
    {"contact": {"phone": "0" * 40}},
    {"contact": {"phone": "((("}},
    {"contact": {"phone": "00\x0b0"}},
    {"name": "bell\x07"},
    {"name": "tab\tinside"},
    {"name": "private\ue000use"},
    {"services": ["line\nbreak"]},
]


async def test_member_writes_that_poison_the_directory_are_refused(stack: Stack) -> None:
    """POST and PATCH accept exactly what GET can show: every accepted extreme reads back, every
    refused one is 422 and leaves the directory readable."""
    m = new_municipality()
    coordinator = stack.auth("coordinator", m)
    base = {"name": "Policia", "kind": "police", "municipality": m}
    written = []
    for extreme in ACCEPTED_EXTREMES:
        created = await stack.referral.post("/v1/members", json={**base, **extreme}, headers=coordinator)
        assert created.status_code == 201, (extreme, created.text)
        written.append(created.json())
        patched = await stack.referral.patch(f"/v1/members/{created.json()['id']}", json=extreme, headers=coordinator)
        assert patched.status_code == 200, (extreme, patched.text)
    for extreme in REFUSED_EXTREMES:
        body = json.dumps({**base, **extreme})  # as raw JSON: the client would refuse some of these itself
        headers = {**coordinator, "Content-Type": "application/json"}
        created = await stack.referral.post("/v1/members", content=body, headers=headers)
        assert created.status_code == 422, (extreme, created.text)
        patched = await stack.referral.patch(f"/v1/members/{written[0]['id']}", content=json.dumps(extreme),
                                             headers=headers)  # fmt: skip
        assert patched.status_code == 422, (extreme, patched.text)
    unpaired = json.dumps({**base, "contact": {"email": "@b.c"}}).replace('"@b.c"', '"\\ud800@b.c"')
    refused = await stack.referral.post(
        "/v1/members", content=unpaired, headers={**coordinator, "Content-Type": "application/json"}
    )
    assert refused.status_code == 422
    listed = await stack.referral.get("/v1/members", headers=coordinator)
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == written
    for member in written:
        one = await stack.referral.get(f"/v1/members/{member['id']}", headers=coordinator)
        assert one.status_code == 200 and one.json() == member


async def test_member_patch_with_nulls_is_422_not_500(stack: Stack) -> None:
    m = new_municipality()
    coordinator = stack.auth("coordinator", m)
    member = await add_member(stack, m, "police")
    for body in ({"active": 0, "kind": None, "name": "0", "services": []}, {"name": None}, {"services": None},
                 {"active": None}, {"contact": None}):  # fmt: skip
        answer = await stack.referral.patch(f"/v1/members/{member['id']}", json=body, headers=coordinator)
        assert answer.status_code == 422, (body, answer.text)
    assert (await stack.referral.get(f"/v1/members/{member['id']}", headers=coordinator)).json() == member
    fine = await stack.referral.patch(
        f"/v1/members/{member['id']}", json={"active": 0, "name": "0", "services": []}, headers=coordinator
    )
    assert fine.status_code == 200 and fine.json()["active"] is False and fine.json()["name"] == "0"


async def test_poisoned_directory_rows_are_repaired_by_the_migration(stack: Stack) -> None:
    """Rows the first release let in (control characters, forty zeros) made every list 500; the
    migration repairs them so the municipality's directory reads again."""
    m = new_municipality()
    coordinator = stack.auth("coordinator", m)
    good = await add_member(stack, m, "police")
    engine = stack.apps["referral"].state.runtime.engine
    poisoned = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO members (id, municipality, name, kind, services, email, phone, active, created_at, "
                "updated_at) VALUES (:id, :m, :name, 'ngo', CAST(:services AS jsonb), :email, :phone, true, now(), "
                "now())"
            ),
            {"id": poisoned, "m": m, "name": "Qendra\x01 Ngo", "services": json.dumps(["ok", "bad\x02", "\x03"]),
             "email": "a\x01@b.c", "phone": "0" * 40},
        )  # fmt: skip
    broken = await stack.referral.get("/v1/members", headers=coordinator)
    assert broken.status_code == 500  # what the fuzzer's rows did to the directory
    repair = _migration("20261202_0003_sealed_text").repair_members
    async with engine.begin() as conn:
        assert await conn.run_sync(repair) == 1  # only the poisoned row: valid rows are left as they are
        assert await conn.run_sync(repair) == 0
    listed = await stack.referral.get("/v1/members", headers=coordinator)
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"][0] == good
    assert listed.json()["items"][1] == {"id": str(poisoned), "name": "Qendra Ngo", "kind": "ngo", "municipality": m,
                                "services": ["ok", "bad"], "contact": {"email": None, "phone": None},
                                "active": True}  # fmt: skip


async def test_unslugged_municipality_parameters_are_422(stack: Stack) -> None:
    auditor = stack.auth("auditor", "*")
    for bad in ('elbasan"\r\nX-Injected: 1', "Elbasan", "../etc", "a" * 70, "élbasan"):
        for path in ("/v1/reports/cases.csv", "/v1/reports/summary", "/v1/members"):
            answer = await stack.referral.get(
                path, params={"municipality": bad, "from": "2026-01-01", "to": "2026-12-31"}, headers=auditor
            )
            assert answer.status_code == 422, (path, bad, answer.status_code)
            assert "x-injected" not in answer.headers
    fine = await stack.referral.get(
        "/v1/reports/cases.csv", params={"municipality": "elbasan", "from": "2026-01-01", "to": "2026-12-31"},
        headers=auditor,
    )
    assert fine.status_code == 200 and 'elbasan' in fine.headers["content-disposition"]


async def test_routing_rule_service_free_text_is_refused_and_stored_text_repaired(stack: Stack) -> None:
    """A rule's `service` rides on every automatic referral and its event: a code, never free text."""
    m = new_municipality()
    coordinator = stack.auth("coordinator", m)
    rule = {"name": "all_to_ngo", "when": [{}], "refer_to": "ngo", "urgency": "high"}
    narrative = {"rules": [{**rule, "service": "she was beaten at home by her husband"}]}
    refused = await stack.referral.put("/v1/routing-rules", json=narrative, headers=coordinator)
    assert refused.status_code == 422, refused.text
    assert "beaten" not in refused.text
    coded = await stack.referral.put(
        "/v1/routing-rules", json={"rules": [{**rule, "service": "psychological"}]}, headers=coordinator
    )
    assert coded.status_code == 200, coded.text
    # A row the first release accepted: the migration drops its free-text service so the rules read again.
    engine = stack.apps["referral"].state.runtime.engine
    stored = [{**rule, "service": "psychological"}, {**rule, "name": "second", "service": "talk to her sister"}]
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE routing_rules SET rules = CAST(:r AS jsonb) WHERE municipality = :m"),
            {"r": json.dumps(stored), "m": m},
        )
    assert (await stack.referral.get("/v1/routing-rules", headers=coordinator)).status_code == 500
    migration = _migration("20261202_0004_coded_rule_service")
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: _run_with_op(sync, migration))
    read = await stack.referral.get("/v1/routing-rules", headers=coordinator)
    assert read.status_code == 200, read.text
    assert [r.get("service") for r in read.json()["rules"]] == ["psychological", None]


def _run_with_op(sync_conn: Any, migration: ModuleType) -> None:
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    with Operations.context(MigrationContext.configure(sync_conn)):
        migration.upgrade()
