"""Read-your-writes across services: a write about a case this service's projection does not know yet.

Services learn of cases from intake's events, so a projection is a moment behind intake: a referral
posted right after its case was reported may reach the referral service before `case.reported` does.
The one rule, for every service (referral `POST /v1/referrals`, `POST /v1/etn-meetings` with `case_ids`
and its minutes' decisions; shelter `POST /v1/placements` and `POST /v1/rent-bonus/applications` when
the case is required):

1. Before its transaction, the write waits for the projection to know the case — at most
   `MKR_PROJECTION_WAIT_SECONDS` (default 2; 0 = do not wait), checking again every 20 ms, then
   every 40, 80, up to 200 ms (each check a fresh statement, so it sees the consumer's commit at once).
2. Known by then: the write goes on and applies its usual rules — a case of another municipality, or
   one the caller may not see, is still 404.
3. Still unknown: **409** `application/problem+json`, type `https://mkr.al/problems/projection-behind`,
   with `Retry-After` (seconds); nothing is written. Not 404, because the case may well exist.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import PROBLEM_JSON, Problem, ProblemDetail

PROJECTION_BEHIND = "https://mkr.al/problems/projection-behind"
FIRST_DELAY, MAX_DELAY = 0.02, 0.2


# For the routes that follow the rule: the 409 documented with its Retry-After header (OpenAPI).
PROJECTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ProblemDetail,
        "description": "Conflict with the current state; `projection-behind` (with `Retry-After`) when this "
        "service has not yet received the case from intake: retry",
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDetail"}}},
        "headers": {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}},
    }
}


class ProjectionBehind(Problem):
    """409: this service has not yet received the event that would tell it about the case."""

    def __init__(self, what: str = "case", *, retry_after: int = 1) -> None:
        super().__init__(
            409,
            f"This service has not received the {what} from intake yet; retry in a moment.",
            title="Projection behind",
            type_=PROJECTION_BEHIND,
            headers={"Retry-After": str(retry_after)},
        )


def retry_after_for(wait_seconds: float) -> int:
    """The `Retry-After` to suggest: the configured wait, in whole seconds, at least 1."""
    return max(1, math.ceil(wait_seconds))


async def wait_until_known(
    session: AsyncSession, known: Callable[[AsyncSession], Awaitable[bool]], *, wait_seconds: float
) -> bool:
    """Check `known` until it is true or `wait_seconds` have passed; True when it became known.

    `session` should not be in a transaction yet: each check runs in a short one of its own (ended
    before the next), so the caller's own `session.begin()` can follow. Inside a caller's transaction the
    checks still see new commits (READ COMMITTED), but the transaction is held while waiting."""
    deadline = time.monotonic() + max(0.0, wait_seconds)
    delay = FIRST_DELAY
    while True:
        if await _check(session, known):
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, MAX_DELAY)


async def _check(session: AsyncSession, known: Callable[[AsyncSession], Awaitable[bool]]) -> bool:
    if session.in_transaction():
        return await known(session)
    async with session.begin():
        return await known(session)


def row_exists(column: Any, value: Any) -> Callable[[AsyncSession], Awaitable[bool]]:
    """A `known` check: the projection holds a row whose `column` is `value` (of any municipality)."""

    async def known(session: AsyncSession) -> bool:
        return bool(await session.scalar(sa.select(sa.exists().where(column == value))))

    return known


def rows_exist(column: Any, values: Collection[Any]) -> Callable[[AsyncSession], Awaitable[bool]]:
    """A `known` check for several ids at once: the projection holds a row for each of `values`."""
    wanted = set(values)

    async def known(session: AsyncSession) -> bool:
        if not wanted:
            return True
        found = await session.scalar(sa.select(sa.func.count(sa.distinct(column))).where(column.in_(wanted)))
        return int(found or 0) == len(wanted)

    return known


async def require_known(
    session: AsyncSession,
    known: Callable[[AsyncSession], Awaitable[bool]],
    *,
    wait_seconds: float,
    what: str = "case",
) -> None:
    """The rule: wait for the projection (bounded), else raise `ProjectionBehind` (409 + Retry-After)."""
    if not await wait_until_known(session, known, wait_seconds=wait_seconds):
        raise ProjectionBehind(what, retry_after=retry_after_for(wait_seconds))
