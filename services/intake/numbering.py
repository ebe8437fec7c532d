"""The case number, taken last: one statement just before the report's commit.

The gap-free per-municipality/year counter is a row lock held until commit, and the audit hash chain's
trigger takes a transaction-level advisory lock (one chainer at a time, all municipalities). Both
serialise reports, so both are taken by the report's last statement: the case, its search index,
assessment, consent, the duplicate search and the outbox row are written first, the case and its event
carrying a placeholder number; then one statement bumps the counter, sets the number on the case,
writes it into the outbox payload and inserts the audit row (whose trigger takes the chain lock). A
transaction that fails at any point rolls the counter back with everything else, so numbers stay
gap-free and unique; the placeholder is never visible outside the transaction.

The audit row depends on the numbered case in the statement, so every report takes the counter before
the chain lock (one order for all, no deadlock between the two).
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from services.intake import domain
from services.intake.models import Case, CaseCounter
from shared.auth import Principal
from shared.db import table_of


def placeholder(case_id: uuid.UUID) -> str:
    """The number a case carries until the last statement numbers it (unique per case, never committed)."""
    return f"pending:{case_id.hex}"


# :prefix-YYYY-NNNNN as domain.format_case_number (lpad pads to five digits, wider numbers stay whole).
NUMBER_CASE_SQL = sa.text(
    """
    WITH counter AS (
        INSERT INTO case_counters (municipality, year, last_seq) VALUES (:m, :year, 1)
        ON CONFLICT (municipality, year) DO UPDATE SET last_seq = case_counters.last_seq + 1
        RETURNING last_seq
    ), numbered AS (
        UPDATE cases SET case_number = :prefix || '-' || CAST(:year AS text) || '-'
            || CASE WHEN counter.last_seq < 100000 THEN lpad(CAST(counter.last_seq AS text), 5, '0')
                    ELSE CAST(counter.last_seq AS text) END
        FROM counter WHERE cases.id = :case_id
        RETURNING cases.case_number
    ), announced AS (
        UPDATE outbox SET payload = replace(outbox.payload, :placeholder, numbered.case_number)
        FROM numbered WHERE outbox.event_id = :event_id
        RETURNING outbox.id
    ), audited AS (
        INSERT INTO audit_log (at, case_id, municipality, sub, role, action)
        SELECT :at, :case_id, :m, :sub, :role, 'case.reported' FROM numbered
        RETURNING id
    )
    SELECT numbered.case_number, (SELECT count(*) FROM announced) AS announced,
           (SELECT count(*) FROM audited) AS audited
    FROM numbered
    """
)


async def number_case(
    session: AsyncSession, *, case: Case, year: int, prefix: str, event_id: uuid.UUID, principal: Principal,
    at: datetime,
) -> str:
    """Take the counter, number the case and its event, and audit the report — the report's last statement."""
    row = (
        await session.execute(
            NUMBER_CASE_SQL,
            {
                "m": case.municipality,
                "year": year,
                "prefix": prefix,
                "case_id": case.id,
                "placeholder": placeholder(case.id),
                "event_id": event_id,
                "at": at,
                "sub": principal.sub,
                "role": principal.role.value,
            },
        )
    ).one()
    if row.announced != 1 or row.audited != 1:
        raise RuntimeError("numbering a case must touch its outbox row and write its audit row")
    set_committed_value(case, "case_number", row.case_number)
    return str(row.case_number)


async def next_case_number(session: AsyncSession, *, municipality: str, year: int, prefix: str) -> str:
    """A number taken on its own (a transfer's new number): the counter row stays locked until commit."""
    table = table_of(CaseCounter)
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
    return domain.format_case_number(prefix, year, int(seq))
