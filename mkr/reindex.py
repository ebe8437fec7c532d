"""`mkr reindex` (CONTRACT §12; issue #17): intake's blind index rebuilt under a new MKR_INDEX_KEY, online.

Change of key (deploy/README.md): intake runs with `MKR_INDEX_KEY=NEW` and `MKR_INDEX_KEY_PREVIOUS=OLD`
(searches and the duplicate check read under both keys, new reports and corrections are indexed under
NEW only); `mkr reindex` rewrites every other row under NEW; then `MKR_INDEX_KEY_PREVIOUS` is dropped.
The old key is not needed here: each row is rebuilt from the case's identity, opened with the case's
own data key (services/intake/casekeys.py).

Each row records the id of the key it is under (`survivor_index.key_id`, a fingerprint), so the
position is the data itself: a batch takes rows not yet under the new key id, `FOR UPDATE SKIP LOCKED`,
in one short transaction, and an interrupted run continues where it stopped when started again. A
report during the run is written under the new key (never selected); a correction or transfer locks
its row and writes it under the new key (a batch skips the locked row, then finds it done; or the
correction waits for the batch and writes over it with the corrected name). An erased case has no
identity left: its row, if any, is deleted, never rebuilt.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.intake import casekeys
from services.intake.casefile import open_personal
from services.intake.models import Case, SurvivorIndex
from shared import db
from shared.crypto import DecryptionError, FieldCipher, SearchIndexer
from shared.settings import Settings

BATCH = 500


@dataclass
class Outcome:
    rewritten: int = 0
    dropped: int = 0  # rows of erased cases, deleted


async def _batch(
    session: AsyncSession, master: FieldCipher, indexer: SearchIndexer, after: uuid.UUID | None, size: int
) -> tuple[Outcome, uuid.UUID | None]:
    """One batch of rows not under `indexer`'s key id, after `after` in case-id order; the last id seen."""
    stmt = sa.select(col(SurvivorIndex.case_id)).where(col(SurvivorIndex.key_id).is_distinct_from(indexer.key_id))
    if after is not None:
        stmt = stmt.where(col(SurvivorIndex.case_id) > after)
    ids = list((await session.scalars(
        stmt.order_by(col(SurvivorIndex.case_id)).limit(size).with_for_update(skip_locked=True)
    )).all())
    outcome = Outcome()
    if not ids:
        return outcome, None
    cases = {case.id: case for case in (await session.scalars(sa.select(Case).where(col(Case.id).in_(ids)))).all()}
    ciphers = await casekeys.ciphers(session, master, ids)
    updates: list[dict[str, Any]] = []
    gone: list[uuid.UUID] = []
    for case_id in ids:
        case = cases[case_id]
        cipher = ciphers[case_id]
        if case.erased_at is not None or (not cipher.has_key and case.personal.startswith(f"{casekeys.CASE_KEY_ID}:")):
            gone.append(case_id)  # erased (anonymised): no identity, no data key; never rebuilt
            continue
        personal = open_personal(cipher, case) or {}
        dob = personal.get("date_of_birth")
        updates.append({
            "case_id": case_id,
            "municipality": case.municipality,
            "name_keys": indexer.keyed(f"{personal['first_name']} {personal['last_name']}", case.municipality),
            "birth_date_key": indexer.token(dob, case.municipality) if dob else None,
            "key_id": indexer.key_id,
        })
    if updates:
        await session.execute(sa.update(SurvivorIndex), updates)  # ORM bulk UPDATE by primary key
    if gone:
        await session.execute(sa.delete(SurvivorIndex).where(col(SurvivorIndex.case_id).in_(gone)))
    outcome.rewritten, outcome.dropped = len(updates), len(gone)
    return outcome, ids[-1]


async def _remaining(session: AsyncSession, key_id: str) -> int:
    return int(await session.scalar(
        sa.select(sa.func.count()).select_from(SurvivorIndex).where(col(SurvivorIndex.key_id).is_distinct_from(key_id))
    ) or 0)


async def reindex(
    settings: Settings, *, batch: int = BATCH, limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Rewrite every index row not under MKR_INDEX_KEY, batch by batch (`limit`: stop after about that
    many rows, as an interrupted run would). Counts: rewritten, dropped (erased cases), remaining."""
    master = FieldCipher.from_settings(settings)
    indexer = SearchIndexer.from_settings(settings)
    engine = db.create_engine(settings, "intake")
    sessions = db.session_factory(engine)
    done = Outcome()
    try:
        async with sessions() as session:
            total = await _remaining(session, indexer.key_id)
        after: uuid.UUID | None = None
        while limit is None or done.rewritten + done.dropped < limit:
            async with sessions() as session, session.begin():
                outcome, after_next = await _batch(session, master, indexer, after, batch)
            done.rewritten += outcome.rewritten
            done.dropped += outcome.dropped
            if progress and after_next is not None:
                progress(done.rewritten + done.dropped, total)
            if after_next is not None:
                after = after_next
                continue
            if after is None:  # a pass from the start found nothing it could take
                async with sessions() as session:
                    if not await _remaining(session, indexer.key_id):
                        break
                await asyncio.sleep(0.2)  # rows locked by a request: taken once it commits
            after = None  # the end: once more from the start, for rows that were locked on the way
        async with sessions() as session:
            remaining = await _remaining(session, indexer.key_id)
    finally:
        await engine.dispose()
    return {"rewritten": done.rewritten, "dropped": done.dropped, "remaining": remaining}


async def status(settings: Settings) -> dict[str, Any]:
    """How many index rows are under each key id, and which ids the settings name."""
    indexer = SearchIndexer.from_settings(settings)
    engine = db.create_engine(settings, "intake")
    try:
        async with db.session_factory(engine)() as session:
            rows = (await session.execute(
                sa.select(col(SurvivorIndex.key_id), sa.func.count()).group_by(col(SurvivorIndex.key_id))
            )).all()
    finally:
        await engine.dispose()
    by_key = {key_id: int(count) for key_id, count in rows}
    return {
        "key_id": indexer.key_id,
        "previous_key_id": indexer.previous.key_id if indexer.previous else None,
        "rows": by_key,
        "done": by_key.get(indexer.key_id, 0),
        "remaining": sum(count for key_id, count in by_key.items() if key_id != indexer.key_id),
    }


def _bar(done: int, total: int, width: int = 30) -> str:
    share = done / total if total else 1.0
    filled = min(width, round(share * width))
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} ({share:.0%})"


def _advice(key_id: str, previous: str | None) -> str:
    tail = " Remove MKR_INDEX_KEY_PREVIOUS from intake's settings and restart it." if previous else ""
    return f"The blind index is entirely under MKR_INDEX_KEY (key id {key_id}).{tail}"


def _show_status(settings: Settings) -> int:
    state = asyncio.run(status(settings))
    print(f"MKR_INDEX_KEY: key id {state['key_id']}, {state['done']} rows")
    if state["previous_key_id"]:
        print(f"MKR_INDEX_KEY_PREVIOUS: key id {state['previous_key_id']}, "
              f"{state['rows'].get(state['previous_key_id'], 0)} rows")
    for key_id, count in sorted(state["rows"].items(), key=lambda item: str(item[0])):
        if key_id not in (state["key_id"], state["previous_key_id"]):
            label = "rows of before key ids" if key_id is None else f"key id {key_id} (not configured)"
            print(f"{label}: {count} rows")
    total = state["done"] + state["remaining"]
    print(f"reindexed: {_bar(state['done'], total)}")
    print(_advice(state["key_id"], state["previous_key_id"]) if not state["remaining"]
          else f"{state['remaining']} rows left: run `mkr reindex` (it continues where it stopped).")
    return 0


def _cmd(args: argparse.Namespace) -> int:
    settings = Settings()
    started = time.monotonic()

    def show(done: int, total: int) -> None:
        print(f"\rreindexed {_bar(done, total)}", end="", file=sys.stderr, flush=True)

    try:
        if args.status:
            return _show_status(settings)
        if not settings.index_key_previous:
            print("mkr reindex: MKR_INDEX_KEY_PREVIOUS is not set here; intake must have it (the old key) while "
                  "this runs, or it does not find the rows not yet moved (deploy/README.md).", file=sys.stderr)
        done = asyncio.run(reindex(settings, batch=args.batch, progress=None if args.quiet else show))
    except (ValueError, RuntimeError, DecryptionError) as exc:  # DecryptionError: MKR_ENCRYPTION_KEY lacks a key id
        print(f"mkr reindex: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(file=sys.stderr)
    print(f"rows rewritten: {done['rewritten']}")
    print(f"rows of erased cases dropped: {done['dropped']}")
    print(f"seconds: {time.monotonic() - started:.1f}")
    if done["remaining"]:  # written under another key meanwhile: a replica still on the old MKR_INDEX_KEY
        print(f"{done['remaining']} rows are under another key again: is every intake replica on the new "
              "MKR_INDEX_KEY? Run `mkr reindex` again once they are.")
        return 1
    indexer = SearchIndexer.from_settings(settings)
    print(_advice(indexer.key_id, indexer.previous.key_id if indexer.previous else None))
    return 0


def register_commands(sub: Any) -> None:
    """Add `reindex` to the `mkr` parser (mkr/cli.py)."""
    command = sub.add_parser("reindex", help="rebuild intake's blind index under the current MKR_INDEX_KEY")
    command.add_argument("--batch", type=int, default=BATCH, help="rows per transaction")
    command.add_argument("--status", action="store_true", help="show progress, change nothing")
    command.add_argument("--quiet", action="store_true", help="no progress bar")
    command.set_defaults(func=_cmd)
