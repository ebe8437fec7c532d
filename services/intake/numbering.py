"""The case number, taken last: one statement just before the report's commit.

The gap-free per-municipality/year counter is a row lock held until commit, and the audit hash chain's
trigger takes a transaction-level advisory lock (one chainer at a time, all municipalities). Both
serialise reports, so both are taken by the report's last statement: the case (carrying a placeholder
number), its search index, assessment and consent are written and the duplicate search runs first
(services/intake/casefile.py); then one statement bumps the counter, sets the number on the case,
inserts the event's outbox row with the number written into its payload, the possible duplicates found,
the audit row (whose trigger takes the chain lock) and, under an Idempotency-Key, the answer stored with
the claim (numbered the same way), so nothing but the COMMIT follows the locks. A
transaction that fails at any point rolls the counter back with everything else, so numbers stay
gap-free and unique; the placeholder is never visible outside the transaction.

The audit row depends on the numbered case in the statement, so every report takes the counter before
the chain lock (one order for all, no deadlock between the two).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import domain
from services.intake.models import CaseCounter
from shared import db
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
        INSERT INTO outbox (event_id, topic, key, payload)
        SELECT CAST(:event_id AS uuid), CAST(:topic AS text), CAST(:key AS text),
               replace(CAST(:payload AS text), CAST(:placeholder AS text), numbered.case_number)
        FROM numbered
        RETURNING outbox.id
    ), candidates AS (
        INSERT INTO duplicate_candidates (case_id, other_id, municipality, score, found_at)
        SELECT :case_id, found.other_id, :m, found.score, :at
        FROM unnest(CAST(:other_ids AS uuid[]), CAST(:scores AS float8[])) AS found(other_id, score)
        ON CONFLICT DO NOTHING
    ), audited AS (
        INSERT INTO audit_log (at, case_id, municipality, sub, role, action)
        SELECT :at, :case_id, :m, :sub, :role, 'case.reported' FROM numbered
        RETURNING id
    ), remembered AS (
        UPDATE idempotency_keys
        SET status_code = 201,
            response = CAST(replace(CAST(:answer AS text), CAST(:placeholder AS text), numbered.case_number) AS jsonb)
        FROM numbered
        WHERE CAST(:idem_key AS text) IS NOT NULL AND idempotency_keys.scope = CAST(:idem_scope AS text)
          AND idempotency_keys.caller = CAST(:idem_caller AS text) AND idempotency_keys.key = CAST(:idem_key AS text)
        RETURNING 1
    )
    SELECT numbered.case_number, (SELECT count(*) FROM announced) AS announced,
           (SELECT count(*) FROM audited) AS audited, (SELECT count(*) FROM remembered) AS remembered
    FROM numbered
    """
)

_NUMBER_CASE = db.DriverStatement(NUMBER_CASE_SQL)  # run by asyncpg itself: every report's last statement


@dataclass(frozen=True)
class Numbering:
    """What the report's last statement numbers: the case, its event's outbox row (`shared.events.outbox_row`,
    still carrying the placeholder), the possible duplicates found (other case id → score) and who reported."""

    case_id: uuid.UUID
    municipality: str
    year: int
    prefix: str
    outbox: dict[str, Any]
    candidates: list[tuple[uuid.UUID, float]]
    principal: Principal
    at: datetime
    # The answer under an Idempotency-Key (its JSON, still carrying the placeholder) and the claim's row
    # (`IdempotentRequest.row`): stored numbered by the same statement, so no statement follows it.
    answer: str | None = None
    claim: dict[str, str | None] | None = None


async def number_case(session: AsyncSession, report: Numbering) -> str:
    """Take the counter, number the case, insert its event (numbered) and its possible duplicates, audit the
    report and, under an Idempotency-Key, store its answer (numbered) with the claim — the report's last
    statement. Returns the case number."""
    rows = (
        await _NUMBER_CASE.fetch(
            session,
            {
                "m": report.municipality,
                "year": report.year,
                "prefix": report.prefix,
                "case_id": report.case_id,
                "placeholder": placeholder(report.case_id),
                **report.outbox,
                "other_ids": [other for other, _ in report.candidates],
                "scores": [score for _, score in report.candidates],
                "at": report.at,
                "sub": report.principal.sub,
                "role": report.principal.role.value,
                "answer": report.answer,
                **(report.claim or {"idem_scope": None, "idem_caller": None, "idem_key": None}),
            },
        )
    )
    if len(rows) != 1:
        raise RuntimeError(f"numbering case {report.case_id}: its row was not found")
    row = rows[0]
    if row.announced != 1 or row.audited != 1:
        raise RuntimeError("numbering a case must insert its outbox row and write its audit row")
    keyed = report.claim is not None and report.claim["idem_key"] is not None
    if row.remembered != (1 if keyed else 0):
        raise RuntimeError("numbering a case under an Idempotency-Key must store its answer with the claim")
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
