"""`mkr rekey` (issue #17): with `k2=NEW,k1=OLD` in force and intake running, every data key is
re-wrapped under k2 and cases of before per-case keys get their own; afterwards intake runs on k2
alone and every case still reads. Batches of one row show the resumable, batched path."""

from __future__ import annotations

import base64
import json
import os
import uuid

import pytest
import sqlalchemy as sa

from mkr.rekey import rekey
from services.intake import casekeys
from services.intake.casefile import personal_context
from services.intake.models import Case
from shared import db
from shared.settings import Settings
from tests.support import Stack, contract_report, new_municipality, running_stack


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def _make_legacy(stack: Stack, case_id: uuid.UUID) -> None:
    """The case as the release before per-case keys stored it: under the master key, no key row."""
    master = stack.apps["intake"].state.cipher
    async with stack.apps["intake"].state.runtime.sessions() as session, session.begin():
        case = await session.get(Case, case_id)
        assert case is not None
        cipher = await casekeys.cipher_for(stack.apps["intake"].state.keys, case_id)
        context = personal_context(case_id, "personal")
        case.personal = master.encrypt(cipher.decrypt(case.personal, context), context)
        session.add(case)
    async with stack.apps["intake"].state.keys.engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM case_keys WHERE case_id = :id"), {"id": case_id})


@pytest.mark.timeout(300)
async def test_rekey_moves_intake_under_the_new_key_while_it_runs(settings: Settings) -> None:
    old, new = _key(), _key()
    run = uuid.uuid4().hex[:4]
    base = settings.model_copy(update={"database_prefix": f"{settings.database_prefix}rk{run}_",
                                       "kafka_topic_prefix": f"{settings.kafka_topic_prefix}rk{run}.",
                                       "encryption_key": f"k1={old}"})
    m = new_municipality()
    names: dict[str, str] = {}
    async with running_stack(base, ("intake",)) as stack:
        coordinator = stack.auth("coordinator", m)
        for last in ("Rekeyone", "Rekeytwo", "Rekeythree", "Rekeyfour"):
            body = contract_report(m)
            body["survivor"]["last_name"] = last
            names[(await stack.intake.post("/v1/cases", json=body, headers=coordinator)).json()["id"]] = last
        ids = list(names)
        closed = await stack.intake.post(f"/v1/cases/{ids[1]}/close", json={"reason": "moved"}, headers=coordinator)
        assert closed.status_code == 200
        erased = await stack.intake.post(f"/v1/cases/{ids[2]}/erase", json={"reason": "asked"}, headers=coordinator)
        assert erased.status_code == 200
        await _make_legacy(stack, uuid.UUID(ids[3]))

    rotated = base.model_copy(update={"encryption_key": f"k2={new},k1={old}"})
    async with running_stack(rotated, ("intake",)) as stack:  # the service answers while rekey runs
        seen: list[tuple[str, int]] = []
        done = await rekey(rotated, batch=1, progress=lambda label, n: seen.append((label, n)))
        assert done == {"data keys re-wrapped": 2, "older cases given their own key": 1,
                        "erasure reasons re-sealed": 1}
        assert ("data keys re-wrapped", 1) in seen  # one row per batch
        assert await rekey(rotated) == dict.fromkeys(done, 0)  # nothing left: a second run resumes at the end
        found = await stack.intake.get("/v1/cases", params={"q": "Rekeyfour"}, headers=stack.auth("coordinator", m))
        assert ids[3] in [item["id"] for item in found.json()["items"]]

    only_new = base.model_copy(update={"encryption_key": f"k2={new}"})
    async with running_stack(only_new, ("intake",)) as stack:
        coordinator = stack.auth("coordinator", m)
        for case_id, last in names.items():
            shown = (await stack.intake.get(f"/v1/cases/{case_id}", headers=coordinator)).json()
            if case_id == ids[2]:
                assert shown["survivor"] == {"erased": True}
            else:
                assert shown["survivor"]["last_name"] == last
        assert (await stack.intake.get(f"/v1/cases/{ids[1]}", headers=coordinator)).json()["close_reason"] == "moved"
        async with stack.apps["intake"].state.keys.engine.connect() as conn:
            wrapped = (await conn.execute(sa.text("SELECT wrapped FROM case_keys"))).scalars().all()
        async with stack.apps["intake"].state.runtime.engine.connect() as conn:
            personal = (await conn.execute(sa.text("SELECT personal FROM cases WHERE erased_at IS NULL"))).scalars()
            assert len(wrapped) == 3 and all(w.startswith("k2:") for w in wrapped)
            assert all(p.startswith("case:") for p in personal)
    await db.drop_database(base, "intake")
    await db.drop_database_at(db.keystore_url(base))
    assert json.dumps(done)
