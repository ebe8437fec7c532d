"""The key store (issue #17): intake's wrapped per-case data keys and the erasure tombstones, in a
PostgreSQL database of their own (`MKR_KEYSTORE_URL`, else `<MKR_DATABASE_PREFIX>keys` on the services'
server), outside intake's data database and therefore outside every data backup (`mkr backup`).

A data backup holds only ciphertext: its cases open with the keys of the *current* key store. A case
erased after the backup has no key there any more, and its tombstone (case id, when, the cause code; no
personal data) tells `mkr restore` to erase it again in the restored data (mkr/backup.py).

Two databases, no shared transaction, so every write is ordered to be safe:
- a report stores the case's key first (committed here), then its data: a report whose data write fails
  leaves an orphan key (harmless: it opens nothing), pruned after a grace period; a case with no key
  cannot arise;
- an erasure writes the tombstone and destroys the key first (one transaction here), then erases the
  data: if the data write fails, the case is already unreadable and the tombstone scan finishes it;
- a key is never stored for a tombstoned case.

The schema is created at start (`open`, idempotent, under an advisory lock); it has no Alembic history.
`open` also moves the keys out of a data database of before the key store (its `case_keys` table, which
migration 0011 then drops): copied here, erased cases tombstoned, then deleted there.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared import db
from shared.crypto import FieldCipher
from shared.settings import Settings

SCHEMA_LOCK = 7310017  # pg_advisory_xact_lock key of the schema creation (several replicas start together)
CHUNK = 5000  # case ids per statement in the bulk reads and writes

metadata = sa.MetaData()
case_keys = sa.Table(
    "case_keys",
    metadata,
    sa.Column("case_id", sa.Uuid(), primary_key=True),
    sa.Column("wrapped", sa.Text(), nullable=False),  # the data key, sealed by the master key (casekeys.py)
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Index("ix_case_keys_created_at", case_keys.c.created_at)
erasures = sa.Table(
    "erasures",
    metadata,
    sa.Column("case_id", sa.Uuid(), primary_key=True),
    sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("cause", sa.Text(), nullable=False),  # a code: request, retention, restored, migrated
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Index("ix_erasures_recorded_at", erasures.c.recorded_at)


# The erased cases of intake's data database, with the cause their audit entry names ("restored" if none).
ERASED_CASES = (
    "SELECT c.id, c.erased_at, coalesce((SELECT split_part(a.action, '.', 3) FROM audit_log a"
    " WHERE a.case_id = c.id AND a.action LIKE 'case.erased.%' ORDER BY a.id LIMIT 1), 'restored')"
    " FROM cases c WHERE c.erased_at IS NOT NULL"
)


# A key stored unless the case has a tombstone or a key already; what was stored or found, and whether the
# case is erased. (The statement's snapshot does not show its own insert: `existing` is the key of before.)
PUT_KEY_SQL = sa.text(
    """
    WITH tomb AS (
        SELECT 1 FROM erasures WHERE case_id = :case_id
    ), added AS (
        INSERT INTO case_keys (case_id, wrapped, created_at)
        SELECT :case_id, :wrapped, :now WHERE NOT EXISTS (SELECT 1 FROM tomb)
        ON CONFLICT (case_id) DO NOTHING
        RETURNING wrapped
    )
    SELECT EXISTS (SELECT 1 FROM tomb) AS erased, (SELECT wrapped FROM added) AS inserted,
           (SELECT wrapped FROM case_keys WHERE case_id = :case_id) AS existing
    """
)

_PUT_KEY = db.DriverStatement(PUT_KEY_SQL)


class KeyRefused(RuntimeError):
    """A key was to be stored for a case the key store holds a tombstone of."""


@dataclass(frozen=True)
class Tombstone:
    case_id: uuid.UUID
    erased_at: datetime
    cause: str


def _chunks(ids: Sequence[uuid.UUID]) -> Iterable[list[uuid.UUID]]:
    for start in range(0, len(ids), CHUNK):
        yield list(ids[start:start + CHUNK])


class KeyStore:
    """The key store's engine and its few statements; `master` wraps the data keys (casekeys.py)."""

    def __init__(self, settings: Settings, master: FieldCipher) -> None:
        self.settings = settings
        self.master = master
        self._pool = (max(2, settings.db_pool_size // 2), settings.db_max_overflow)
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("the key store is not open")
        return self._engine

    @property
    def url(self) -> sa.URL:
        """The key store's database, resolved when needed (not when an app is built: with no
        MKR_DATABASE_URL, resolving it starts the embedded server, which building an app must not do)."""
        return db.keystore_url(self.settings)

    async def open(self) -> None:
        """Create the database and its tables if missing, and connect."""
        url = self.url
        await db.ensure_database_at(url)
        self._engine = create_async_engine(
            url, pool_size=self._pool[0], max_overflow=self._pool[1], pool_timeout=15,
            connect_args={"server_settings": {"application_name": "mkr-keystore"}, "timeout": 10},
        )
        db.ping_idle_connections(self._engine)
        async with self.engine.begin() as conn:
            await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})"))
            await conn.run_sync(metadata.create_all)
        await self.move_out()

    async def move_out(self) -> int:
        """Move the keys of a data database of before the key store here (see the module's text); how
        many keys intake's data database gave up. Nothing to do once migration 0011 dropped its table."""
        engine = db.create_engine(self.settings, "intake")
        try:
            try:
                async with engine.connect() as conn:
                    if await conn.scalar(sa.text("SELECT to_regclass('public.case_keys')")) is None:
                        return 0
                    keys = (await conn.execute(sa.text("SELECT case_id, wrapped, created_at FROM case_keys"))).all()
                    tombs = (await conn.execute(sa.text(ERASED_CASES))).all()
            except (OSError, sa.exc.DBAPIError):
                return 0  # no data database yet (a first start): nothing to move
            await self.erase([Tombstone(row[0], row[1], row[2]) for row in tombs])
            async with self.engine.begin() as ks:
                for row in keys:
                    await ks.execute(insert(case_keys).values(case_id=row[0], wrapped=row[1], created_at=row[2])
                                     .on_conflict_do_nothing(index_elements=[case_keys.c.case_id]))
                await ks.execute(sa.delete(case_keys).where(case_keys.c.case_id.in_(
                    sa.select(erasures.c.case_id))))
            held = set(await self.wrapped([row[0] for row in keys]))
            moved = [row[0] for row in keys if row[0] in held or row[0] in {t[0] for t in tombs}]
            async with engine.begin() as conn:
                for chunk in _chunks(moved):
                    await conn.execute(sa.text("DELETE FROM case_keys WHERE case_id = ANY(:ids)"), {"ids": chunk})
            return len(moved)
        finally:
            await engine.dispose()

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[KeyStore]:
        await self.open()
        try:
            yield self
        finally:
            await self.close()

    async def put(self, case_id: uuid.UUID, wrapped: str) -> str:
        """Store a case's wrapped key (committed on return) unless it has one: the one stored. Refused
        (KeyRefused) for an erased case. One statement in autocommit: one round trip on a report's path."""
        async with self.engine.connect() as conn:
            # asyncpg itself, outside any transaction (SQLAlchemy begins one only at its own first statement).
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            (row,) = await _PUT_KEY.run(driver, {"case_id": case_id, "wrapped": wrapped, "now": datetime.now(UTC)})
        if row.erased:
            raise KeyRefused(f"case {case_id} is erased")
        stored = row.inserted or row.existing
        assert stored is not None
        return str(stored)

    async def wrapped(self, case_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        """The wrapped key of each case that has one."""
        found: dict[uuid.UUID, str] = {}
        if not case_ids:
            return found
        async with self.engine.connect() as conn:
            for chunk in _chunks(case_ids):
                rows = await conn.execute(
                    sa.select(case_keys.c.case_id, case_keys.c.wrapped).where(case_keys.c.case_id.in_(chunk))
                )
                found.update({row.case_id: row.wrapped for row in rows})
        return found

    async def erase(self, tombstones: Sequence[Tombstone]) -> int:
        """Record the tombstones (an existing one is kept) and destroy those cases' keys, in one
        transaction, committed on return. How many keys were destroyed."""
        destroyed = 0
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            for start in range(0, len(tombstones), CHUNK):
                part = tombstones[start:start + CHUNK]
                await conn.execute(
                    insert(erasures).values([
                        {"case_id": t.case_id, "erased_at": t.erased_at, "cause": t.cause, "recorded_at": now}
                        for t in part
                    ]).on_conflict_do_nothing(index_elements=[erasures.c.case_id])
                )
                ids = [t.case_id for t in part]
                gone = await conn.execute(sa.delete(case_keys).where(case_keys.c.case_id.in_(ids)))
                destroyed += gone.rowcount or 0
        return destroyed

    async def tombstones(self, *, since: datetime | None = None) -> list[Tombstone]:
        """Every tombstone (or those recorded since `since`)."""
        stmt = sa.select(erasures.c.case_id, erasures.c.erased_at, erasures.c.cause)
        if since is not None:
            stmt = stmt.where(erasures.c.recorded_at >= since)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt.order_by(erasures.c.recorded_at))).all()
        return [Tombstone(row.case_id, row.erased_at, row.cause) for row in rows]

    async def prune_orphans(
        self, existing: Callable[[list[uuid.UUID]], Awaitable[set[uuid.UUID]]], *, grace: timedelta,
        horizon: timedelta = timedelta(days=1),
    ) -> int:
        """Delete the keys, stored between `horizon` and `grace` ago, whose case `existing` does not know:
        reports whose data write failed. Older keys are left alone (a key store kept while the data was
        restored from an older backup holds keys of cases a newer data backup may still bring back)."""
        now = datetime.now(UTC)
        async with self.engine.connect() as conn:
            candidates = list((await conn.execute(
                sa.select(case_keys.c.case_id).where(case_keys.c.created_at < now - grace,
                                                     case_keys.c.created_at >= now - horizon)
            )).scalars())
        known = await existing(candidates) if candidates else set()
        orphans = [case_id for case_id in candidates if case_id not in known]
        if not orphans:
            return 0
        async with self.engine.begin() as conn:
            gone = await conn.execute(sa.delete(case_keys).where(case_keys.c.case_id.in_(orphans),
                                                                 case_keys.c.created_at < now - grace))
        return gone.rowcount or 0

    async def counts(self) -> dict[str, int]:
        async with self.engine.connect() as conn:
            keys = await conn.scalar(sa.select(sa.func.count()).select_from(case_keys))
            tombs = await conn.scalar(sa.select(sa.func.count()).select_from(erasures))
        return {"keys": int(keys or 0), "tombstones": int(tombs or 0)}


__all__ = ["KeyRefused", "KeyStore", "Tombstone", "case_keys", "erasures", "metadata"]
