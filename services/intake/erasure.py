"""Erasing a case (CONTRACT §12; issue #17): on a lawful request, or by retention after closure.

The case's data key is destroyed (crypto-shredding: every copy of its ciphertext, backups included,
no longer opens), its identity/narrative/close-reason ciphertext and its blind-index row are deleted,
the free text of its protection orders (court, reference) is cleared. Coded facts, risk history,
consent records and the audit trail stay, so reports do not change. `case.anonymised` tells referral,
shelter and notifications to erase their own free text for the case.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.intake import casekeys, keystore
from services.intake.casefile import personal_context
from services.intake.events import case_anonymised
from services.intake.keystore import KeyStore, Tombstone
from services.intake.models import AuditEntry, Case, CaseTransfer, IdentityCorrection, ProtectionOrder, SurvivorIndex
from shared.db import table_of
from shared.scheduler import claim_due, periodic
from shared.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from shared.app import ServiceRuntime

log = logging.getLogger("mkr.intake.erasure")

ERASED = "erased"  # what `cases.personal` holds once the case is erased: no ciphertext at all
RETENTION_BATCH = 50
RETENTION_SUB = "mkr-retention"
KEYSTORE_SUB = "mkr-keystore"  # who erases a case again from the key store's tombstone
RESTORED = "restored"  # the audit action's suffix of an erasure re-applied from a tombstone
CAUSES = ("request", "retention")  # the causes `case.anonymised` carries
CHUNK = 5000


async def erase(
    session: AsyncSession,
    settings: Settings,
    keys: KeyStore,
    case: Case,
    *,
    reason: str,
    cause: str,
    sub: str,
    role: str,
    action: str | None = None,
    tombstoned: bool = False,
) -> None:
    """Erase `case` in the caller's transaction (the row locked by the caller), audit it, publish it.
    The tombstone and the key's destruction are committed in the key store first (keystore.py): if this
    transaction then fails, the case is already unreadable and `apply_tombstones` finishes it.
    `tombstoned`: the key store has the case's tombstone already (and so no key: `KeyStore.erase`)."""
    now = datetime.now(UTC)
    master = keys.master
    if not tombstoned:
        await casekeys.destroy(keys, case.id, erased_at=now, cause=cause)
    await session.execute(sa.delete(SurvivorIndex).where(SurvivorIndex.case_id == case.id))  # type: ignore[arg-type]
    await session.execute(
        sa.update(ProtectionOrder)
        .where(ProtectionOrder.case_id == case.id)  # type: ignore[arg-type]
        .values(court=None, reference=None)
    )
    await session.execute(
        sa.update(IdentityCorrection)
        .where(IdentityCorrection.case_id == case.id)  # type: ignore[arg-type]
        .values(previous=None)
    )
    await session.execute(  # a transfer's reasons may tell her circumstances: gone with the rest
        sa.update(CaseTransfer)
        .where(CaseTransfer.case_id == case.id)  # type: ignore[arg-type]
        .values(reason=ERASED, decline_reason=None)
    )
    case.personal = ERASED
    case.close_reason = None
    case.erased_at = now
    case.erasure_reason = master.encrypt(reason, personal_context(case.id, "erasure_reason"))
    session.add(case)
    await session.flush()
    table = table_of(AuditEntry)
    await session.execute(
        table.insert().values(
            at=now, case_id=case.id, municipality=case.municipality, sub=sub, role=role,
            action=action or f"case.erased.{cause}",
        )
    )
    await case_anonymised(session, settings, case, cause=cause)


def retention_cutoff(years: int, now: datetime) -> datetime:
    """Closed before this instant is past retention (a year counted as 365.25 days)."""
    return now - timedelta(days=365.25 * years)


async def anonymise_due(session: AsyncSession, settings: Settings, keys: KeyStore) -> int:
    """One batch of cases closed longer than the retention period, erased once (rows another replica
    holds are skipped). Returns how many were erased; 0 when retention is off."""
    years = settings.retention_years_after_closure
    if years <= 0:
        return 0
    stmt = sa.select(Case).where(
        Case.status == "closed",  # type: ignore[arg-type]
        Case.erased_at.is_(None),  # type: ignore[union-attr]
        Case.closed_at < retention_cutoff(years, datetime.now(UTC)),  # type: ignore[operator,arg-type]
    ).order_by(Case.closed_at)  # type: ignore[arg-type]
    due: list[Case] = await claim_due(session, stmt, limit=RETENTION_BATCH)
    for case in due:
        await erase(session, settings, keys, case, reason="retention period after closure",
                    cause="retention", sub=RETENTION_SUB, role="system")
    return len(due)


def retention_job(settings: Settings, keys: KeyStore) -> Callable[[ServiceRuntime], Awaitable[None]]:
    """The scheduled, once-only anonymisation of cases past `MKR_RETENTION_YEARS_AFTER_CLOSURE`."""

    async def scan(runtime: ServiceRuntime) -> int:
        async with runtime.sessions() as session, session.begin():
            erased = await anonymise_due(session, settings, keys)
        if erased:
            log.info("cases anonymised by retention", extra={"count": erased})
        return erased

    return periodic("retention", scan, lambda: settings.retention_scan_seconds)


async def apply_tombstones(
    session: AsyncSession, settings: Settings, keys: KeyStore, *, since: datetime | None = None,
    limit: int | None = RETENTION_BATCH,
) -> int:
    """The key store's tombstones (recorded since `since`) applied to the data: each case they name that
    is not erased here yet (an erasure whose data write failed, a restored backup older than the erasure)
    is erased again, its index and free text removed and `case.anonymised` published anew. At most
    `limit` cases (rows another replica holds are skipped); how many were erased."""
    tombs = {t.case_id: t for t in await keys.tombstones(since=since)}
    if not tombs:
        return 0
    ids = list(tombs)
    erased = 0
    for start in range(0, len(ids), CHUNK):
        room = CHUNK if limit is None else limit - erased
        if room <= 0:
            break
        stmt = sa.select(Case).where(col(Case.id).in_(ids[start:start + CHUNK]), col(Case.erased_at).is_(None))
        for case in await claim_due(session, stmt.order_by(col(Case.id)), limit=room):
            cause = tombs[case.id].cause
            await erase(session, settings, keys, case, reason=f"tombstone in the key store ({cause})",
                        cause=cause if cause in CAUSES else "request", sub=KEYSTORE_SUB, role="system",
                        action=f"case.erased.{RESTORED}", tombstoned=True)
            erased += 1
    return erased


async def tombstone_erased(session: AsyncSession, keys: KeyStore) -> int:
    """The other way: every case erased in the data gets its tombstone in the key store and loses its key
    there (a key store restored from a key backup older than the erasure). How many keys were destroyed."""
    rows = (await session.execute(sa.text(keystore.ERASED_CASES))).all()
    return await keys.erase([Tombstone(row[0], row[1], row[2]) for row in rows])


def tombstone_job(settings: Settings, keys: KeyStore) -> Callable[[ServiceRuntime], Awaitable[None]]:
    """Finishes, within minutes, an erasure whose key-store half committed and whose data half did not."""

    async def scan(runtime: ServiceRuntime) -> int:
        since = datetime.now(UTC) - timedelta(days=1)
        async with runtime.sessions() as session, session.begin():
            erased = await apply_tombstones(session, settings, keys, since=since)
        if erased:
            log.warning("erasures finished from the key store's tombstones", extra={"count": erased})
        return erased

    return periodic("tombstones", scan, lambda: settings.retention_scan_seconds)


def is_erased(case: Case) -> bool:
    return case.erased_at is not None


__all__ = ["ERASED", "anonymise_due", "apply_tombstones", "erase", "is_erased", "retention_job",
           "tombstone_erased", "tombstone_job"]
