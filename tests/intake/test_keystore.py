"""The key store (issue #17; services/intake/keystore.py): intake's data database holds no key material,
and a report that writes its key and its data in two databases never leaves a readable half."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from mkr.backup import prune_key_backups
from services.intake import casekeys, erasure
from services.intake.keystore import KeyStore, Tombstone
from services.intake.main import prune_orphan_keys
from shared import db
from shared.crypto import FieldCipher
from shared.errors import Problem
from shared.pgtools import dump_text
from shared.settings import Settings
from tests.conftest import drop_databases
from tests.support import Stack, contract_report, new_municipality, running_stack


def _keys(stack: Stack) -> KeyStore:
    keys: KeyStore = stack.apps["intake"].state.keys
    return keys


async def _data(stack: Stack, sql: str, **params: Any) -> list[Any]:
    async with stack.apps["intake"].state.runtime.engine.begin() as conn:
        result = await conn.execute(sa.text(sql), params)
        return list(result.all()) if result.returns_rows else []


async def _keystore(stack: Stack, sql: str, **params: Any) -> list[Any]:
    async with _keys(stack).engine.begin() as conn:
        result = await conn.execute(sa.text(sql), params)
        return list(result.all()) if result.returns_rows else []


async def _report(stack: Stack, m: str, last_name: str) -> Any:
    """POST /v1/cases; the response, or the exception the app raised (an unhandled error in the app
    reaches the in-process client as the exception itself)."""
    body = contract_report(m)
    body["survivor"]["last_name"] = last_name
    try:
        return await stack.intake.post("/v1/cases", json=body, headers=stack.auth("coordinator", m))
    except Exception as exc:  # the failure under test: a 500 over a real socket
        return exc


async def test_a_dump_of_intake_holds_no_key_material(stack: Stack) -> None:
    m = new_municipality()
    created = await _report(stack, m, "Keyless")
    assert created.status_code == 201, created.text
    case_id = uuid.UUID(created.json()["id"])
    [row] = await _keystore(stack, "SELECT wrapped FROM case_keys WHERE case_id = :id", id=case_id)
    data_key = casekeys.unwrap(_keys(stack).master, case_id, row.wrapped)
    dump = await dump_text(stack.settings, "intake")
    [stored] = await _data(stack, "SELECT personal FROM cases WHERE id = :id", id=case_id)
    assert stored.personal.startswith("case:") and stored.personal in dump  # the ciphertext is there
    for secret in (row.wrapped, row.wrapped.partition(":")[2], base64.b64encode(data_key).decode(),
                   data_key.hex(), "Keyless"):
        assert secret not in dump
    assert "case_keys" not in dump  # not even the table


async def test_a_report_whose_data_write_fails_leaves_no_readable_half(stack: Stack) -> None:
    m, other = new_municipality(), new_municipality()
    kept = await _report(stack, other, "Keptkey")
    assert kept.status_code == 201, kept.text
    kept_id = uuid.UUID(kept.json()["id"])
    before = datetime.now(UTC)
    fn = f"fail_{uuid.uuid4().hex[:8]}"
    await _data(stack, f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                       f"RAISE EXCEPTION 'data write fails'; END $$")
    await _data(stack, f"CREATE TRIGGER {fn} BEFORE INSERT ON cases FOR EACH ROW "
                       f"WHEN (NEW.municipality = '{m}') EXECUTE FUNCTION {fn}()")
    try:
        failed = await _report(stack, m, "Halfwritten")
    finally:
        await _data(stack, f"DROP TRIGGER {fn} ON cases")
        await _data(stack, f"DROP FUNCTION {fn}()")
    assert isinstance(failed, Exception) or failed.status_code >= 500
    assert await _data(stack, "SELECT id FROM cases WHERE municipality = :m", m=m) == []  # no case, no half
    new_keys = [row.case_id for row in await _keystore(
        stack, "SELECT case_id FROM case_keys WHERE created_at >= :at", at=before)]
    existing = {row.id for row in await _data(stack, "SELECT id FROM cases WHERE id = ANY(:ids)", ids=new_keys)}
    orphans = [case_id for case_id in new_keys if case_id not in existing]
    assert len(orphans) == 1  # the key was written first: an orphan, which opens nothing
    # Every case has its key: none of the data database's cases with `case:` ciphertext lacks one.
    sealed = [row.id for row in await _data(stack, "SELECT id FROM cases WHERE personal LIKE 'case:%'")]
    assert sealed and set(await _keys(stack).wrapped(sealed)) == set(sealed)

    runtime = stack.apps["intake"].state.runtime
    assert await prune_orphan_keys(runtime, _keys(stack), timedelta(hours=1)) == 0  # within the grace period
    assert await prune_orphan_keys(runtime, _keys(stack), timedelta(0)) >= 1
    assert await _keys(stack).wrapped(orphans) == {}
    assert kept_id in await _keys(stack).wrapped([kept_id])  # a case's key is never pruned
    shown = await stack.intake.get(f"/v1/cases/{kept_id}", headers=stack.auth("coordinator", other))
    assert shown.status_code == 200 and shown.json()["survivor"]["last_name"] == "Keptkey"


async def test_a_report_whose_key_write_fails_writes_no_data(stack: Stack) -> None:
    m = new_municipality()
    fn = f"fail_{uuid.uuid4().hex[:8]}"
    await _keystore(stack, f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                           f"RAISE EXCEPTION 'key write fails'; END $$")
    await _keystore(stack, f"CREATE TRIGGER {fn} BEFORE INSERT ON case_keys FOR EACH ROW EXECUTE FUNCTION {fn}()")
    try:
        failed = await _report(stack, m, "Nokey")
    finally:
        await _keystore(stack, f"DROP TRIGGER {fn} ON case_keys")
        await _keystore(stack, f"DROP FUNCTION {fn}()")
    assert isinstance(failed, Exception) or failed.status_code >= 500
    assert await _data(stack, "SELECT id FROM cases WHERE municipality = :m", m=m) == []
    again = await _report(stack, m, "Nokey")  # the key store back: the report goes through
    assert again.status_code == 201, again.text


async def test_an_erased_case_gets_no_key_again(stack: Stack) -> None:
    m = new_municipality()
    coordinator = stack.auth("coordinator", m)
    created = await _report(stack, m, "Tombstoned")
    case_id = created.json()["id"]
    erased = await stack.intake.post(f"/v1/cases/{case_id}/erase", json={"reason": "asked"}, headers=coordinator)
    assert erased.status_code == 200, erased.text
    [tomb] = await _keystore(stack, "SELECT cause FROM erasures WHERE case_id = :id", id=case_id)
    assert tomb.cause == "request"
    assert await _keys(stack).wrapped([uuid.UUID(case_id)]) == {}
    with pytest.raises(Problem) as refused:
        await casekeys.new_key(_keys(stack), uuid.UUID(case_id))
    assert refused.value.status == 409


async def test_an_erasure_whose_data_write_failed_is_finished_from_its_tombstone(stack: Stack) -> None:
    m = new_municipality()
    coordinator = stack.auth("coordinator", m)
    case_id = uuid.UUID((await _report(stack, m, "Halferased")).json()["id"])
    since = datetime.now(UTC)
    await _keys(stack).erase([Tombstone(case_id, since, "request")])  # the key store's half only
    shown = await stack.intake.get(f"/v1/cases/{case_id}", headers=coordinator)
    assert shown.status_code == 200 and shown.json()["survivor"] == {"erased": True}  # unreadable at once
    [row] = await _data(stack, "SELECT erased_at FROM cases WHERE id = :id", id=case_id)
    assert row.erased_at is None
    app = stack.apps["intake"]
    async with app.state.runtime.sessions() as session, session.begin():
        assert await erasure.apply_tombstones(session, stack.settings, _keys(stack), since=since) == 1
    async with app.state.runtime.sessions() as session, session.begin():
        assert await erasure.apply_tombstones(session, stack.settings, _keys(stack), since=since) == 0  # once
    [row] = await _data(stack, "SELECT erased_at, personal FROM cases WHERE id = :id", id=case_id)
    assert row.erased_at is not None and row.personal == erasure.ERASED
    assert await _data(stack, "SELECT 1 FROM survivor_index WHERE case_id = :id", id=case_id) == []
    trail = (await stack.intake.get("/v1/audit", params={"case_id": str(case_id)}, headers=coordinator)).json()
    assert "case.erased.restored" in [entry["action"] for entry in trail["items"]]


def test_key_backups_are_kept_for_a_bounded_time(tmp_path: Path) -> None:
    now = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    for days in (1, 6, 8, 30):
        path = tmp_path / f"keys-{days:02d}"
        path.mkdir()
        (path / "manifest.json").write_text(json.dumps({"kind": "keys",
                                                        "started_at": (now - timedelta(days=days)).isoformat()}))
    (tmp_path / "keys-data").mkdir()  # no manifest: not ours, left alone
    (tmp_path / "keys-data" / "manifest.json").write_text(json.dumps({"format": 1, "services": {}}))
    removed = prune_key_backups(tmp_path, keep_days=7, now=now)
    assert sorted(p.name for p in removed) == ["keys-08", "keys-30"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys-01", "keys-06", "keys-data"]


async def test_a_database_of_before_the_key_store_has_its_keys_moved_out(settings: Settings) -> None:
    """Intake's data database of before the key store (0011_h17idx_index_key) with its keys in `case_keys`:
    the next start moves them into the key store (tombstones for its erased cases), then migration
    0011_h17keys_keystore drops the table."""
    run = uuid.uuid4().hex[:4]
    own = settings.model_copy(update={"database_prefix": f"{settings.database_prefix}mv{run}_"})
    m = new_municipality()
    async with running_stack(own, ("intake",)) as stack:
        kept = (await _report(stack, m, "Movedout")).json()["id"]
        gone = (await _report(stack, m, "Erasedbefore")).json()["id"]
        erased = await stack.intake.post(f"/v1/cases/{gone}/erase", json={"reason": "asked"},
                                         headers=stack.auth("coordinator", m))
        assert erased.status_code == 200
        [key] = await _keystore(stack, "SELECT wrapped, created_at FROM case_keys WHERE case_id = :id", id=kept)
    # Back to the layout of before: the key in intake's own table, the key store without it or the tombstone.
    store = KeyStore(own, FieldCipher.from_settings(own))
    async with store.opened():  # (the data database at head: nothing to move yet)
        async with store.engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM case_keys"))
            await conn.execute(sa.text("DELETE FROM erasures"))
    engine = db.create_engine(own, "intake")
    migrations = Path(__file__).resolve().parents[2] / "services" / "intake" / "migrations"
    try:
        async with engine.begin() as conn:
            await conn.run_sync(
                lambda c: command.downgrade(db._alembic_config(migrations, c, own), "0011_h17idx_index_key"))
            await conn.execute(sa.text("INSERT INTO case_keys VALUES (:id, :w, :at)"),
                               {"id": kept, "w": key.wrapped, "at": key.created_at})
    finally:
        await engine.dispose()

    async with running_stack(own, ("intake",)) as stack:
        shown = await stack.intake.get(f"/v1/cases/{kept}", headers=stack.auth("coordinator", m))
        assert shown.status_code == 200 and shown.json()["survivor"]["last_name"] == "Movedout"
        assert [row.wrapped for row in await _keystore(stack, "SELECT wrapped FROM case_keys")] == [key.wrapped]
        assert [(str(r.case_id), r.cause) for r in await _keystore(stack, "SELECT case_id, cause FROM erasures")] == [
            (gone, "request")]
        assert await _data(stack, "SELECT to_regclass('public.case_keys') AS t") == [(None,)]
        assert await _keys(stack).move_out() == 0  # idempotent: nothing left to move
    await drop_databases(own)
