"""Intake rules: case numbering."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake.models import CaseCounter


def case_prefix(municipality: str) -> str:
    return municipality.replace("-", "")[:3].upper()


async def next_case_number(session: AsyncSession, *, municipality: str, year: int) -> str:
    """Gap-free per municipality and year: the counter row is locked until the case commits."""
    table = CaseCounter.__table__  # type: ignore[attr-defined]
    seq = (
        await session.execute(
            pg_insert(table)
            .values(municipality=municipality, year=year, last_seq=1)
            .on_conflict_do_update(
                index_elements=[table.c.municipality, table.c.year], set_={"last_seq": table.c.last_seq + 1}
            )
            .returning(table.c.last_seq)
        )
    ).scalar_one()
    return f"{case_prefix(municipality)}-{year}-{seq:05d}"


__all__ = ["next_case_number", "sa"]
