"""Correcting a survivor's identity (PATCH /v1/cases/{id}/survivor; issue #17): the new values under the
case's own key, the values before kept sealed in `identity_corrections` (who, when, which fields), and
the blind index rebuilt from the corrected name and date of birth so duplicate detection and search
follow the correction at once."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import casekeys, domain
from services.intake.casefile import open_personal, personal_context
from services.intake.casekeys import CaseCipher
from services.intake.models import Case, IdentityCorrection, SurvivorIndex
from services.intake.schemas import SurvivorPatch
from shared.auth import Principal
from shared.crypto import DecryptionError, FieldCipher, SearchIndexer
from shared.errors import conflict

FIELDS = ("first_name", "last_name", "date_of_birth", "phone", "address")


def correction_context(case_id: uuid.UUID, at: datetime) -> str:
    return f"intake:case:{case_id}:correction:{at.isoformat()}"


def _given(patch: SurvivorPatch) -> dict[str, Any]:
    values = {name: getattr(patch, name) for name in FIELDS if name in patch.model_fields_set}
    if isinstance(values.get("date_of_birth"), date):
        values["date_of_birth"] = values["date_of_birth"].isoformat()
    return values


async def reindex(session: AsyncSession, indexer: SearchIndexer, case: Case, personal: dict[str, Any]) -> None:
    """The case's blind-index row from its (corrected) identity."""
    dob = personal.get("date_of_birth")
    age = case.facts.get("age")
    birth_year = int(dob[:4]) if dob else (case.reported_at.year - age if age is not None else None)
    row = await session.get(SurvivorIndex, case.id, with_for_update=True)
    if row is None:
        row = SurvivorIndex(case_id=case.id, municipality=case.municipality, name_keys=[])
    row.name_keys = indexer.keyed(f"{personal['first_name']} {personal['last_name']}", case.municipality)
    row.birth_year = birth_year
    row.birth_date_key = indexer.token(dob, case.municipality) if dob else None
    row.key_id = indexer.key_id  # under MKR_INDEX_KEY, also while `mkr reindex` runs (it skips this row then)
    session.add(row)


def _refresh_age(case: Case, dob: str | None, timezone: str) -> None:
    if not dob:
        return
    day = case.reported_at.astimezone(ZoneInfo(timezone)).date()
    age = domain.age_on(date.fromisoformat(dob), day)
    case.facts = {**case.facts, "age": age, "age_group": domain.age_group(age)}


async def correct(
    session: AsyncSession, *, master: FieldCipher, indexer: SearchIndexer, case: Case, principal: Principal,
    patch: SurvivorPatch, timezone: str,
) -> list[str]:
    """Apply the patch in the caller's transaction; the names of the fields that changed."""
    if case.erased_at is not None:
        raise conflict("The case is erased: there is no identity to correct.")
    cipher = await casekeys.writable(session, master, case)
    personal = open_personal(cipher, case) or {}
    given = _given(patch)
    changed = [name for name, value in given.items() if personal.get(name) != value]
    if not changed:
        return []
    now = datetime.now(UTC)
    previous = {name: personal.get(name) for name in changed}
    personal.update(given)
    case.personal = cipher.encrypt(json.dumps(personal), personal_context(case.id, "personal"))
    if "date_of_birth" in changed:
        _refresh_age(case, personal.get("date_of_birth"), timezone)
    session.add(case)
    session.add(IdentityCorrection(
        case_id=case.id, at=now, sub=principal.sub, role=principal.role.value, fields=changed,
        previous=cipher.encrypt(json.dumps(previous), correction_context(case.id, now)),
    ))
    if {"first_name", "last_name", "date_of_birth"} & set(changed):
        await reindex(session, indexer, case, personal)
    return changed


async def history(session: AsyncSession, cipher: CaseCipher, case_id: uuid.UUID) -> list[dict[str, Any]]:
    """The corrections of a case, oldest first, with the values before (None once erased)."""
    rows = (
        await session.execute(
            sa.select(IdentityCorrection)
            .where(IdentityCorrection.case_id == case_id)  # type: ignore[arg-type]
            .order_by(IdentityCorrection.id)  # type: ignore[arg-type]
        )
    ).scalars().all()
    out = []
    for row in rows:
        before = None
        if row.previous is not None:
            try:
                before = json.loads(cipher.decrypt(row.previous, correction_context(case_id, row.at)))
            except DecryptionError:
                before = None
        out.append({"at": row.at.isoformat(), "sub": row.sub, "role": row.role, "fields": row.fields,
                    "previous": before})
    return out
