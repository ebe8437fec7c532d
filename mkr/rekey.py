"""`mkr rekey` (CONTRACT §12; issue #17): intake's data under the newest master key id, online.

Rotation: put the new key first in `MKR_ENCRYPTION_KEY` (`k2=NEW,k1=OLD`) and restart the services
(new writes use k2, both keys read); run `mkr rekey`; then drop `k1`. Rekey re-wraps every case's data
key in the key store (services/intake/keystore.py) under the first key id (the case data itself stays
as it is: it is under its data key), moves the
cases stored before per-case keys onto a data key of their own (their master-key ciphertext is
re-encrypted, which also makes them erasable by crypto-shredding), and re-seals erasure reasons.

Each batch is one short transaction over rows locked `FOR UPDATE SKIP LOCKED`, so the services keep
answering, and a row a request holds is taken by the next pass. It selects only rows not yet under the
first key id, so an interrupted run resumes where it stopped when started again.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.intake import casekeys, keystore
from services.intake.casefile import personal_context
from services.intake.keystore import KeyStore
from services.intake.models import Case
from shared import db
from shared.crypto import FieldCipher
from shared.settings import Settings

BATCH = 500


async def _rewrap(session: AsyncSession, keys: KeyStore, batch: int) -> int:
    """One batch of the key store's data keys re-wrapped (in a key-store transaction of its own)."""
    master = keys.master
    table = keystore.case_keys
    async with keys.engine.begin() as conn:
        rows = (await conn.execute(
            sa.select(table.c.case_id, table.c.wrapped)
            .where(sa.not_(table.c.wrapped.startswith(f"{master.current_id}:")))
            .order_by(table.c.case_id).limit(batch).with_for_update(skip_locked=True)
        )).all()
        for row in rows:
            key = casekeys.unwrap(master, row.case_id, row.wrapped)
            await conn.execute(sa.update(table).where(table.c.case_id == row.case_id)
                               .values(wrapped=casekeys.wrap(master, key, row.case_id)))
    return len(rows)


async def _upgrade_legacy(session: AsyncSession, keys: KeyStore, batch: int) -> int:
    """Cases of before per-case keys: onto a data key of their own."""
    mine = f"{casekeys.CASE_KEY_ID}:"
    rows = (await session.execute(
        sa.select(Case).where(
            Case.erased_at.is_(None),  # type: ignore[union-attr]
            sa.or_(sa.not_(col(Case.personal).startswith(mine)),
                   sa.not_(sa.func.coalesce(Case.close_reason, mine).startswith(mine))),
        ).order_by(Case.id).limit(batch).with_for_update(skip_locked=True)  # type: ignore[arg-type]
    )).scalars().all()
    for case in rows:
        cipher = await casekeys.writable(keys, case)
        for field in ("personal", "close_reason"):
            token = getattr(case, field)
            if token is not None and not token.startswith(mine):
                context = personal_context(case.id, field)
                setattr(case, field, cipher.encrypt(cipher.decrypt(token, context), context))
        session.add(case)
    return len(rows)


async def _reseal_reasons(session: AsyncSession, keys: KeyStore, batch: int) -> int:
    master = keys.master
    rows = (await session.execute(
        sa.select(Case).where(
            Case.erasure_reason.is_not(None),  # type: ignore[union-attr]
            sa.not_(col(Case.erasure_reason).startswith(f"{master.current_id}:")),
        ).order_by(Case.id).limit(batch).with_for_update(skip_locked=True)  # type: ignore[arg-type]
    )).scalars().all()
    for case in rows:
        context = personal_context(case.id, "erasure_reason")
        case.erasure_reason = master.encrypt(master.decrypt(case.erasure_reason or "", context), context)
        session.add(case)
    return len(rows)


STEPS = (("data keys re-wrapped", _rewrap), ("older cases given their own key", _upgrade_legacy),
         ("erasure reasons re-sealed", _reseal_reasons))


async def rekey(settings: Settings, *, batch: int = BATCH,
                progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Run every step to the end, batch by batch; how many rows each step changed."""
    keys = KeyStore(settings, FieldCipher.from_settings(settings))
    await keys.open()
    engine = db.create_engine(settings, "intake")
    sessions = db.session_factory(engine)
    done: dict[str, int] = {}
    try:
        for label, step in STEPS:
            done[label] = 0
            while True:
                async with sessions() as session, session.begin():
                    changed = await step(session, keys, batch)
                if not changed:
                    break
                done[label] += changed
                if progress:
                    progress(label, done[label])
    finally:
        await engine.dispose()
        await keys.close()
    return done


def _cmd(args: argparse.Namespace) -> int:
    def show(label: str, count: int) -> None:
        print(f"\r{label}: {count}", end="", file=sys.stderr, flush=True)

    try:
        done = asyncio.run(rekey(Settings(), batch=args.batch, progress=None if args.quiet else show))
    except (ValueError, RuntimeError) as exc:
        print(f"mkr rekey: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(file=sys.stderr)
    for label, count in done.items():
        print(f"{label}: {count}")
    return 0


def register_commands(sub: Any) -> None:
    """Add `rekey` to the `mkr` parser (mkr/cli.py)."""
    command = sub.add_parser("rekey", help="move intake's data keys under the newest MKR_ENCRYPTION_KEY id")
    command.add_argument("--batch", type=int, default=BATCH, help="rows per transaction")
    command.add_argument("--quiet", action="store_true", help="no progress line")
    command.set_defaults(func=_cmd)
