"""Erasure by crypto-shredding (issue #17): a case's own data key, `POST /v1/cases/{id}/erase`, the
`case.anonymised` event that empties the other services' free text, and the retention job."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from services.intake import casekeys, erasure
from services.intake.casefile import personal_context
from shared.crypto import DecryptionError
from shared.pgtools import dump_text
from tests.referral.helpers import add_member
from tests.shelter.helpers import placement_body, register
from tests.support import Stack, contract_report, new_municipality, wait_for


def _person(tag: str) -> dict[str, Any]:
    """An invented survivor whose name, phone, address and narrative are unique to this test."""
    letters = "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:8])
    return {
        "first_name": "Mimoza",
        "last_name": f"Zz{letters}",
        "phone": f"+3556{uuid.uuid4().int % 10**8:08d}",
        "address": f"Rruga {tag} {letters}",
        "narrative": f"NARRATIVE-{tag}-{letters} she left on foot",
    }


async def _report(stack: Stack, m: str, person: dict[str, Any]) -> dict[str, Any]:
    body = contract_report(m)
    body["survivor"].update(first_name=person["first_name"], last_name=person["last_name"],
                            phone=person["phone"], address=person["address"])
    body["incident"]["description"] = person["narrative"]
    body["consent"]["share_with"] = ["police", "social_services", "shelter", "health"]
    created = await stack.intake.post("/v1/cases", json=body, headers=stack.auth("coordinator", m))
    assert created.status_code == 201, created.text
    return dict(created.json())


async def _row(stack: Stack, sql: str, **params: Any) -> Any:
    async with stack.apps["intake"].state.runtime.engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).first()


async def _stored(stack: Stack, case_id: str) -> Any:
    """The case's ciphertext (intake's data database) joined with its wrapped key (the key store)."""
    row = await _row(stack, "SELECT personal FROM cases WHERE id = :id", id=case_id)
    async with stack.apps["intake"].state.keys.engine.connect() as conn:
        key = (await conn.execute(sa.text("SELECT wrapped FROM case_keys WHERE case_id = :id"),
                                  {"id": case_id})).first()
    return SimpleNamespace(personal=row.personal, wrapped=key.wrapped) if row is not None and key is not None else None


async def _other_services_text(stack: Stack, m: str, case_id: str, tag: str) -> tuple[str, str]:
    """A referral with a note and an outcome, a discharge reason and a rent-bonus decision reason."""
    coordinator = stack.auth("coordinator", m)
    health = await add_member(stack, m, "health")  # a kind routing does not choose for these needs

    async def projected() -> bool:
        answer = await stack.referral.post(
            "/v1/referrals",
            json={"case_id": case_id, "to_member_id": health["id"], "urgency": "normal", "service": "health",
                  "note": f"NOTE-{tag} meet her at the back door"},
            headers=coordinator,
        )  # fmt: skip
        return answer.status_code == 201

    await wait_for(projected, what="referral's projection of the case")
    sid = (await register(stack, m))["id"]
    placed = await stack.shelter.post("/v1/placements", json=placement_body(sid, case_id), headers=coordinator)
    assert placed.status_code == 201, placed.text
    ended = await stack.shelter.post(
        f"/v1/placements/{placed.json()['id']}/discharge", json={"reason": f"DISCHARGE-{tag} went home"},
        headers=coordinator,
    )
    assert ended.status_code == 200, ended.text
    app = await stack.shelter.post(
        "/v1/rent-bonus/applications",
        json={"case_id": case_id, "municipality": m, "monthly_rent": "25000.00", "household_size": 2,
              "requested_months": 3},
        headers=coordinator,
    )  # fmt: skip
    assert app.status_code == 201, app.text
    decided = await stack.shelter.post(
        f"/v1/rent-bonus/applications/{app.json()['id']}/decision",
        json={"approved": False, "reason": f"DECISION-{tag} income too high"},
        headers=stack.auth("housing_officer", m),
    )
    assert decided.status_code == 200, decided.text
    return placed.json()["id"], app.json()["id"]


async def test_erasure_shreds_the_case_everywhere(stack: Stack) -> None:
    m = new_municipality()
    coordinator = stack.auth("coordinator", m)
    person = _person("erase")
    case = await _report(stack, m, person)
    case_id = case["id"]
    placement_id, application_id = await _other_services_text(stack, m, case_id, "erase")
    closed = await stack.intake.post(f"/v1/cases/{case_id}/close", json={"reason": "CLOSE-erase moved abroad"},
                                     headers=coordinator)
    assert closed.status_code == 200, closed.text
    stored = await _stored(stack, case_id)  # the ciphertext (data database) and its wrapped key (key store)
    assert stored is not None and stored.personal.startswith("case:")  # under the case's own key
    before = await dump_text(stack.settings, "intake")
    assert stored.personal in before and person["last_name"] not in before  # sealed, yet openable until now

    refused = await stack.intake.post(f"/v1/cases/{case_id}/erase", json={}, headers=coordinator)
    assert refused.status_code == 422
    police = stack.auth("police", m, member_id="m-police")
    denied = await stack.intake.post(f"/v1/cases/{case_id}/erase", json={"reason": "x"}, headers=police)
    assert denied.status_code == 403
    erased = await stack.intake.post(f"/v1/cases/{case_id}/erase", json={"reason": "lawful request, art. 13"},
                                     headers=coordinator)
    assert erased.status_code == 200, erased.text
    again = await stack.intake.post(f"/v1/cases/{case_id}/erase", json={"reason": "twice"}, headers=coordinator)
    assert again.status_code == 409

    shown = (await stack.intake.get(f"/v1/cases/{case_id}", headers=coordinator)).json()
    assert shown["survivor"] == {"erased": True}
    assert shown["incident"]["description"] is None and shown["close_reason"] is None
    assert shown["case_number"] == case["case_number"] and shown["incident"]["violence_types"]  # coded facts stay
    search = await stack.intake.get("/v1/cases", params={"q": person["last_name"]}, headers=coordinator)
    assert search.status_code == 200 and search.json()["items"] == []
    listed = (await stack.intake.get("/v1/cases", headers=coordinator)).json()["items"]
    assert [(i["erased"], i["first_name"]) for i in listed if i["id"] == case_id] == [(True, None)]
    twin = await _report(stack, m, person)  # the same woman reported again: not linked to the erased case
    assert case_id not in [d["id"] for d in twin["possible_duplicates"]]
    trail = (await stack.intake.get("/v1/audit", params={"case_id": case_id}, headers=coordinator)).json()["items"]
    assert "case.erased.request" in [entry["action"] for entry in trail]

    after = await dump_text(stack.settings, "intake")
    for secret in (person["last_name"], person["phone"], person["address"], "NARRATIVE-erase", "CLOSE-erase",
                   stored.personal, stored.wrapped):
        assert secret not in after
    # A copy of the ciphertext taken before no longer opens: the key that sealed it is gone.
    cipher = await casekeys.cipher_for(stack.apps["intake"].state.keys, uuid.UUID(case_id))
    with pytest.raises(DecryptionError):
        cipher.decrypt(stored.personal, personal_context(uuid.UUID(case_id), "personal"))

    async def others_erased() -> bool:
        referrals = (await stack.referral.get("/v1/referrals", params={"case_id": case_id},
                                              headers=coordinator)).json()["items"]
        placement = (await stack.shelter.get(f"/v1/placements/{placement_id}", headers=coordinator)).json()
        application = (await stack.shelter.get(f"/v1/rent-bonus/applications/{application_id}",
                                               headers=stack.auth("housing_officer", m))).json()
        return (all(r["note"] is None for r in referrals) and placement["end_reason"] is None
                and application["reason"] is None)

    await wait_for(others_erased, what="referral and shelter erasing the case's free text")


async def test_retention_anonymises_cases_closed_long_ago_once(stack: Stack) -> None:
    m = new_municipality()
    coordinator = stack.auth("coordinator", m)
    old, recent, still_open = _person("old"), _person("recent"), _person("open")
    ids = {}
    for name, person in (("old", old), ("recent", recent), ("open", still_open)):
        ids[name] = (await _report(stack, m, person))["id"]
    for name, years in (("old", 6), ("recent", 4)):
        closed = await stack.intake.post(f"/v1/cases/{ids[name]}/close", json={"reason": f"CLOSE-{name}"},
                                         headers=coordinator)
        assert closed.status_code == 200
        async with stack.apps["intake"].state.runtime.engine.begin() as conn:
            await conn.execute(sa.text("UPDATE cases SET closed_at = :at WHERE id = :id"),
                               {"at": datetime.now(UTC) - timedelta(days=365 * years + 2), "id": ids[name]})
    app = stack.apps["intake"]
    runtime, master = app.state.runtime, app.state.keys
    never = stack.settings.model_copy(update={"retention_years_after_closure": 0})
    async with runtime.sessions() as session, session.begin():
        assert await erasure.anonymise_due(session, never, master) == 0
    five = stack.settings.model_copy(update={"retention_years_after_closure": 5})
    for _ in range(5):  # other tests' cases may also be due: run batches until this one is done
        async with runtime.sessions() as session, session.begin():
            if not await erasure.anonymise_due(session, five, master):
                break
    shown = {name: (await stack.intake.get(f"/v1/cases/{ids[name]}", headers=coordinator)).json() for name in ids}
    assert shown["old"]["survivor"] == {"erased": True}
    assert shown["recent"]["survivor"]["last_name"] == recent["last_name"]
    assert shown["open"]["survivor"]["last_name"] == still_open["last_name"]
    async with runtime.sessions() as session, session.begin():  # once only: nothing left to do for it
        await erasure.anonymise_due(session, five, master)
    events = await _row(stack, "SELECT count(*) AS n FROM outbox WHERE payload::jsonb->>'type' = 'case.anonymised' "
                               "AND payload::jsonb->'data'->>'case_id' = :id", id=ids["old"])
    assert events.n == 1
    trail = (await stack.intake.get("/v1/audit", params={"case_id": ids["old"]}, headers=coordinator)).json()["items"]
    assert [e["action"] for e in trail].count("case.erased.retention") == 1
    assert old["last_name"] not in await dump_text(stack.settings, "intake")
