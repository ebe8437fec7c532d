"""`mkr backup` / `mkr restore` (issue #17): 50 cases reported and routed, a backup, the databases
destroyed, the backup restored onto a fresh PostgreSQL server, the services started on it: every case
readable, routed once, no alert raised twice, and the relay and consumers going on where they were."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mkr.backup import backup, backup_keys, read_manifest, restore, restore_keys
from mkr.registry import SERVICES
from shared import db
from shared.embedded import ensure_postgres, stop_postgres
from shared.pgtools import dump_text
from shared.settings import Settings
from tests.conftest import drop_databases
from tests.referral.helpers import add_member
from tests.support import Stack, contract_report, new_municipality, running_stack, wait_for

CASES = 50


async def _count(stack: Stack, service: str, sql: str, **params: Any) -> int:
    async with stack.apps[service].state.runtime.engine.connect() as conn:
        return int((await conn.execute(sa.text(sql), params)).scalar() or 0)


async def _settled(stack: Stack, m: str) -> dict[str, int]:
    """What the stack holds on the municipality once every case is routed and alerting has gone quiet."""

    async def routed() -> bool:
        return await _count(stack, "referral", "SELECT count(DISTINCT case_id) FROM routing_decisions d "
                                               "JOIN case_facts c USING (case_id) WHERE c.municipality = :m",
                            m=m) >= CASES

    await wait_for(routed, timeout=120, what="every case routed")
    last = -1
    while True:  # the alerts of the last events may still be on their way
        alerts = await _count(stack, "notifications", "SELECT count(*) FROM alerts WHERE municipality = :m", m=m)
        if alerts == last:
            break
        last = alerts
        await asyncio.sleep(3)
    return {
        "decisions": await _count(stack, "referral", "SELECT count(*) FROM routing_decisions d JOIN case_facts c "
                                                     "USING (case_id) WHERE c.municipality = :m", m=m),
        "referrals": await _count(stack, "referral", "SELECT count(*) FROM referrals WHERE municipality = :m", m=m),
        "alerts": last,
    }


@pytest.mark.timeout(600)  # two stacks, 50 cases, a second PostgreSQL server: 80 s alone, more on a shared machine
async def test_backup_restores_onto_fresh_servers(settings: Settings, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:4]
    own = settings.model_copy(update={"database_prefix": f"{settings.database_prefix}bk{run}_",
                                      "kafka_topic_prefix": f"{settings.kafka_topic_prefix}bk{run}."})
    m = new_municipality()
    ids: list[str] = []
    async with running_stack(own) as stack:
        await add_member(stack, m, "legal_aid")
        await add_member(stack, m, "shelter")
        coordinator = stack.auth("coordinator", m)
        for n in range(CASES):
            body = contract_report(m)
            body["survivor"]["last_name"] = f"Backup{chr(97 + n % 26)}{chr(97 + n // 26)}"
            created = await stack.intake.post("/v1/cases", json=body, headers=coordinator)
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        before = await _settled(stack, m)
        assert before["referrals"] >= CASES and before["alerts"] > 0
        manifest = await backup(own, tmp_path / "backup")
        keys_manifest = await backup_keys(own, tmp_path / "keys")  # the key store, dumped apart
    assert keys_manifest["keys"] >= CASES and not keys_manifest["pruned"]
    assert set(manifest["services"]) == {"intake", "referral", "shelter", "notifications"}
    assert manifest["services"]["intake"]["outbox"]["unpublished"] == 0
    assert read_manifest(tmp_path / "backup")["services"]["intake"]["migration_heads"]

    await drop_databases(own)  # the disk is lost
    state = Path(tempfile.mkdtemp(prefix="mkr-test-restore-pg-"))
    try:
        # A fresh embedded server. With an external server (MKR_DATABASE_URL) the restore goes onto that
        # server's dropped, now empty, databases instead: this machine's system PostgreSQL 15 carries a
        # `pg_attver` option on every column of its catalogue, which PostgreSQL 18 refuses, so its dumps
        # restore only onto a server of its own kind.
        external = bool(os.environ.get("MKR_DATABASE_URL"))
        url = own.database_url if external else ensure_postgres(state, cleanup_mode="delete")
        fresh = own.model_copy(update={"database_url": url})
        await restore_keys(fresh, Path(keys_manifest["directory"]))  # the key store was on the lost disk too
        restored = await restore(fresh, tmp_path / "backup")
        assert restored["erasures"]["cases_without_key"] == 0  # every case's key came back with the key store
        async with running_stack(fresh) as stack:
            coordinator = stack.auth("coordinator", m)
            for n, case_id in enumerate(ids):
                shown = await stack.intake.get(f"/v1/cases/{case_id}", headers=coordinator)
                assert shown.status_code == 200, shown.text
                assert shown.json()["survivor"]["last_name"] == f"Backup{chr(97 + n % 26)}{chr(97 + n // 26)}"
            found = await stack.intake.get("/v1/cases", params={"q": "Backupaa"}, headers=coordinator)
            assert ids[0] in [item["id"] for item in found.json()["items"]]
            created = await stack.intake.post("/v1/cases", json=contract_report(m), headers=coordinator)
            assert created.status_code == 201  # the relay and the consumers go on from where they were
            ids.append(created.json()["id"])
            after = await _settled_one_more(stack, m, created.json()["id"])
        assert after["decisions_of_old"] == before["decisions"]  # routed once
        assert after["referrals_of_old"] == before["referrals"]
        assert after["alerts_of_old"] == before["alerts"]  # no alert raised twice
        await drop_databases(fresh)
    finally:
        stop_postgres(state)
        shutil.rmtree(state, ignore_errors=True)


async def _settled_one_more(stack: Stack, m: str, new_case: str) -> dict[str, int]:
    async def routed() -> bool:
        return bool(await _count(stack, "referral", "SELECT count(*) FROM routing_decisions WHERE case_id = :c",
                                 c=new_case))

    await wait_for(routed, timeout=60, what="the case reported after the restore routed")
    await asyncio.sleep(5)  # time for anything replayed twice to show
    old = "AND case_id <> :c"
    return {
        "decisions_of_old": await _count(stack, "referral", "SELECT count(*) FROM routing_decisions d JOIN case_facts "
                                                            f"c USING (case_id) WHERE c.municipality = :m {old}",
                                         m=m, c=new_case),
        "referrals_of_old": await _count(stack, "referral", f"SELECT count(*) FROM referrals WHERE municipality = :m "
                                                            f"{old}", m=m, c=new_case),
        "alerts_of_old": await _count(stack, "notifications", "SELECT count(*) FROM alerts WHERE municipality = :m "
                                                              "AND (case_id IS NULL OR case_id <> :c)",
                                      m=m, c=new_case),
    }


@pytest.mark.timeout(400)  # two stacks on a shared machine
async def test_a_backup_taken_before_an_erasure_restores_the_case_erased(settings: Settings, tmp_path: Path) -> None:
    """The data databases lost and restored from a backup of before an erasure, the key store kept: the
    erased case stays unreadable (GET, search, export), its index row and other services' text gone again."""
    run = uuid.uuid4().hex[:4]
    own = settings.model_copy(update={"database_prefix": f"{settings.database_prefix}be{run}_",
                                      "kafka_topic_prefix": f"{settings.kafka_topic_prefix}be{run}."})
    m = new_municipality()
    names = {"gone": f"Erased{uuid.uuid4().hex[:6]}", "kept": f"Stays{uuid.uuid4().hex[:6]}"}
    ids: dict[str, str] = {}
    async with running_stack(own) as stack:
        health = await add_member(stack, m, "health")
        coordinator = stack.auth("coordinator", m)
        for which, last in names.items():
            body = contract_report(m)
            body["survivor"]["last_name"] = last
            body["consent"]["share_with"] = ["police", "social_services", "shelter", "health"]
            created = await stack.intake.post("/v1/cases", json=body, headers=coordinator)
            assert created.status_code == 201, created.text
            ids[which] = created.json()["id"]

        async def referred() -> bool:
            answer = await stack.referral.post(
                "/v1/referrals", json={"case_id": ids["gone"], "to_member_id": health["id"], "urgency": "normal",
                                       "service": "health", "note": f"NOTE-{names['gone']} the back door"},
                headers=coordinator)
            return answer.status_code == 201

        await wait_for(referred, timeout=60, what="referral's projection of the case")
        await backup(own, tmp_path / "backup")  # before the erasure
        erased = await stack.intake.post(f"/v1/cases/{ids['gone']}/erase", json={"reason": "lawful request"},
                                         headers=coordinator)
        assert erased.status_code == 200, erased.text
    for service in SERVICES:  # the data databases are lost; the key store, kept apart, is not
        await db.drop_database(own, service)

    manifest = await restore(own, tmp_path / "backup")
    assert {k: manifest["erasures"][k] for k in ("keys_destroyed", "cases_erased_again", "cases_without_key")} == {
        "keys_destroyed": 0, "cases_erased_again": 1, "cases_without_key": 0}
    dump = await dump_text(own, "intake")
    assert names["gone"] not in dump and "case_keys" not in dump
    async with running_stack(own) as stack:
        coordinator = stack.auth("coordinator", m)
        shown = await stack.intake.get(f"/v1/cases/{ids['gone']}", headers=coordinator)
        assert shown.status_code == 200 and shown.json()["survivor"] == {"erased": True}
        kept = await stack.intake.get(f"/v1/cases/{ids['kept']}", headers=coordinator)
        assert kept.json()["survivor"]["last_name"] == names["kept"]
        for which in names:
            found = await stack.intake.get("/v1/cases", params={"q": names[which]}, headers=coordinator)
            assert [item["id"] for item in found.json()["items"]] == ([ids["kept"]] if which == "kept" else [])
        exported = await stack.intake.get(f"/v1/cases/{ids['gone']}/export", headers=coordinator)
        assert exported.status_code == 200 and names["gone"] not in exported.text
        assert await _count(stack, "intake", "SELECT count(*) FROM survivor_index WHERE case_id = :c",
                            c=ids["gone"]) == 0
        trail = (await stack.intake.get("/v1/audit", params={"case_id": ids["gone"]},
                                        headers=coordinator)).json()["items"]
        assert "case.erased.restored" in [entry["action"] for entry in trail]

        async def note_erased() -> bool:  # case.anonymised published again: referral erases its note again
            items = (await stack.referral.get("/v1/referrals", params={"case_id": ids["gone"]},
                                              headers=coordinator)).json()["items"]
            return bool(items) and all(item["note"] is None for item in items)

        await wait_for(note_erased, timeout=60, what="referral erasing the restored note again")
    await drop_databases(own)
