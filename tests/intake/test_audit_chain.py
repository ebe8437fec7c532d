"""The audit trail cannot lie (issue #11): rows hash-chained in a concurrency-safe order, and
`mkr audit verify` names the first broken link of a trail tampered with behind the service's back."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from mkr.cli import main
from services.intake import audit
from shared import db
from tests.intake.conftest import reported
from tests.support import Stack, new_municipality


def _cli_env(monkeypatch: pytest.MonkeyPatch, stack: Stack) -> None:
    """`mkr` reads its settings from the environment: point it at this package's intake database."""
    settings = stack.settings
    monkeypatch.setenv("MKR_ENVIRONMENT", "test")
    monkeypatch.setenv("MKR_STATE_DIR", str(settings.state_dir))
    monkeypatch.setenv("MKR_DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("MKR_DATABASE_PREFIX", settings.database_prefix)


async def _verdict(stack: Stack) -> audit.Verdict:
    engine = db.create_engine(stack.settings, "intake")
    try:
        async with engine.connect() as conn:
            return await audit.verify(conn)
    finally:
        await engine.dispose()


async def test_concurrent_audit_rows_form_one_unbroken_chain(intake: Stack) -> None:
    """Reads committing concurrently must neither fork the chain nor leave a gap in it."""
    m = new_municipality()
    case = await reported(intake, m)
    await reported(intake, m)
    headers = intake.auth("coordinator", m)
    # Single-row inserts (reads) racing multi-row ones (a list audits each case it shows, in one statement).
    calls = [intake.intake.get(f"/v1/cases/{case['id']}", headers=headers) for _ in range(20)]
    calls += [intake.intake.get("/v1/cases", headers=headers) for _ in range(5)]
    answers = await asyncio.gather(*calls)
    assert {r.status_code for r in answers} == {200}
    verdict = await _verdict(intake)
    assert verdict.broken is None, verdict
    assert verdict.rows >= 2 + 20 + 5 * 2
    engine = db.create_engine(intake.settings, "intake")
    try:
        async with engine.connect() as conn:
            seqs = (await conn.execute(sa.text("SELECT min(seq), max(seq), count(*) FROM audit_log"))).one()
    finally:
        await engine.dispose()
    assert (seqs[0], seqs[1]) == (1, seqs[2])  # gap-free


async def test_tampered_audit_row_is_named_by_audit_verify(
    intake: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A superuser who switches off the append-only trigger and rewrites who read a case is caught."""
    m = new_municipality()
    case = await reported(intake, m)
    await intake.intake.get(f"/v1/cases/{case['id']}", headers=intake.auth("coordinator", m, sub="real-reader"))
    _cli_env(monkeypatch, intake)
    assert await asyncio.to_thread(main, ["audit", "verify"]) == 0
    assert "audit chain intact" in capsys.readouterr().out

    engine = db.create_engine(intake.settings, "intake")
    try:
        async with engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.text("SELECT id, seq FROM audit_log WHERE case_id = :c AND sub = 'real-reader'"),
                    {"c": case["id"]},
                )
            ).one()
        try:
            await _set_sub(engine, row.id, "someone-else")
            verdict = await _verdict(intake)
            assert verdict.broken is not None
            assert (verdict.broken.seq, verdict.broken.id) == (row.seq, row.id)
            assert await asyncio.to_thread(main, ["audit", "verify"]) == 1
            err = capsys.readouterr().err
            assert f"seq {row.seq} (row id {row.id})" in err
        finally:
            await _set_sub(engine, row.id, "real-reader")  # the rest of the package's trail stays verifiable
        assert (await _verdict(intake)).broken is None
    finally:
        await engine.dispose()


async def test_deleted_audit_row_is_named_by_audit_verify(intake: Stack) -> None:
    m = new_municipality()
    case = await reported(intake, m)
    await intake.intake.get(f"/v1/cases/{case['id']}", headers=intake.auth("coordinator", m, sub="deleted-reader"))
    await intake.intake.get(f"/v1/cases/{case['id']}", headers=intake.auth("coordinator", m, sub="next-reader"))
    engine = db.create_engine(intake.settings, "intake")
    try:
        async with engine.begin() as conn:
            gone = (
                await conn.execute(
                    sa.text("SELECT * FROM audit_log WHERE case_id = :c AND sub = 'deleted-reader'"), {"c": case["id"]}
                )
            ).one()
            await conn.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change"))
            await conn.execute(sa.text("DELETE FROM audit_log WHERE id = :id"), {"id": gone.id})
            await conn.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_change"))
        try:
            verdict = await _verdict(intake)
            assert verdict.broken is not None and verdict.broken.seq == gone.seq + 1
            assert "missing" in verdict.broken.reason
        finally:
            async with engine.begin() as conn:  # put it back as it was, chain and all
                await conn.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_chain"))
                await conn.execute(
                    sa.text(
                        "INSERT INTO audit_log (id, at, case_id, municipality, sub, role, action, seq, hash) "
                        "OVERRIDING SYSTEM VALUE VALUES (:id, :at, :case_id, :municipality, :sub, :role, :action, "
                        ":seq, :hash)"
                    ),
                    dict(gone._mapping),
                )
                await conn.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_chain"))
        assert (await _verdict(intake)).broken is None
    finally:
        await engine.dispose()


async def _set_sub(engine: AsyncEngine, row_id: int, sub: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change"))
        await conn.execute(sa.text("UPDATE audit_log SET sub = :s WHERE id = :id"), {"s": sub, "id": row_id})
        await conn.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_change"))


def test_canonical_content_cannot_be_shifted_between_fields() -> None:
    """"ab" + "c" and "a" + "bc" must not hash alike: each field carries its length."""
    from datetime import UTC, datetime

    at = datetime(2026, 12, 2, tzinfo=UTC)
    one = audit.canonical(1, at, None, "m", "ab", "c", "x")
    two = audit.canonical(1, at, None, "m", "a", "bc", "x")
    assert one != two
