"""The audit trail's hash chain, verified (CONTRACT §2: an audit that cannot lie).

Each `audit_log` row carries `seq` (gap-free, in the order rows were chained) and `hash` =
sha256(the previous row's hash + the row's canonical content), set by a trigger on insert (migration
0005access). Verifying recomputes the chain in Python, independently of the database's own function,
and names the first row whose stored hash is not what its content and its predecessor make.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

GENESIS = "0" * 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _field(value: str | None) -> str:
    return "~" if value is None else f"{len(value)}:{value}"


def canonical(seq: int, at: datetime, case_id: uuid.UUID | None, municipality: str, sub: str, role: str,
              action: str) -> str:
    """The row as the trigger hashes it: each field "<length>:<text>" ("~" when empty), `at` in µs."""
    micros = (at - _EPOCH) // timedelta(microseconds=1)
    parts = [str(seq), str(micros), None if case_id is None else str(case_id), municipality, sub, role, action]
    return "".join(_field(part) for part in parts)


def link(previous: str, content: str) -> str:
    return hashlib.sha256((previous + content).encode()).hexdigest()


@dataclass(frozen=True)
class BrokenLink:
    seq: int  # the row's place in the chain
    id: int
    reason: str


@dataclass(frozen=True)
class Verdict:
    rows: int
    head: str  # the last row's hash: record it elsewhere, and a rewritten chain shows
    broken: BrokenLink | None


async def verify(conn: AsyncConnection, batch: int = 5000) -> Verdict:
    """Walk the chain in `seq` order, a batch at a time; stop at the first broken link."""
    previous, expected_seq, rows = GENESIS, 1, 0
    after = 0
    while True:
        result = await conn.execute(
            sa.text(
                "SELECT id, seq, hash, at, case_id, municipality, sub, role, action FROM audit_log "
                "WHERE seq > :after ORDER BY seq LIMIT :batch"
            ),
            {"after": after, "batch": batch},
        )
        chunk: list[Any] = list(result.all())
        if not chunk:
            break
        for row in chunk:
            rows += 1
            if row.seq != expected_seq:
                return Verdict(rows, previous, BrokenLink(row.seq, row.id, f"seq {expected_seq} is missing"))
            content = canonical(row.seq, row.at, row.case_id, row.municipality, row.sub, row.role, row.action)
            previous = link(previous, content)
            if row.hash != previous:
                return Verdict(rows, previous, BrokenLink(row.seq, row.id, "hash does not match the row"))
            expected_seq += 1
            after = row.seq
    return Verdict(rows, previous, None)
