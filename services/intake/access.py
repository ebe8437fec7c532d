"""Who may see a case (CONTRACT §2): its municipality, and for an institution a referral that lets it read.

A case the caller may not see answers 404 like one that does not exist (`CaseHidden`); the app records
the attempt in the case's audit trail (`trail.record_denied`).
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.intake import domain
from services.intake.models import Case, ReferralAccess
from shared.auth import Principal
from shared.errors import Problem, not_found


async def get_visible_case(
    session: AsyncSession, principal: Principal, case_id: uuid.UUID, *, for_update: bool = False
) -> Case:
    """The case if the caller may see it; 404 otherwise (another municipality, or not theirs)."""
    stmt = sa.select(Case).where(col(Case.id) == case_id)
    if for_update:
        stmt = stmt.with_for_update()
    case = (await session.execute(stmt)).scalar_one_or_none()
    if case is None:
        raise not_found("case")
    if case.municipality != principal.municipality:
        raise CaseHidden(case, principal)
    referred = False
    if principal.is_institution and principal.member_id is not None:
        referred = await is_referred(session, case.id, principal.member_id)
    if not domain.can_read_case(
        principal,
        reported_by_sub=case.reported_by_sub,
        reported_by_member_id=case.reported_by_member_id,
        referred=referred,
    ):
        raise CaseHidden(case, principal)
    return case


READABLE_STATUSES = ("pending", "acknowledged", "accepted", "completed")  # CONTRACT §2


def readable_referral(case_id: Any, member_id: Any) -> sa.ColumnElement[bool]:
    """A referral of the case to the institution that lets it read the case (declined/cancelled do not)."""
    return (
        sa.select(sa.literal(1))
        .where(
            col(ReferralAccess.case_id) == case_id,
            col(ReferralAccess.member_id) == member_id,
            col(ReferralAccess.status).in_(READABLE_STATUSES),
        )
        .exists()
    )


async def is_referred(session: AsyncSession, case_id: uuid.UUID, member_id: str) -> bool:
    return bool(await session.scalar(sa.select(readable_referral(case_id, member_id))))


class CaseHidden(Problem):
    """404 for a case that exists but is not the caller's to see, like one that does not exist. The app's
    handler records the attempt in the case's audit trail once the request's transaction is over."""

    def __init__(self, case: Case, principal: Principal) -> None:
        super().__init__(404, "No such case.")
        self.case_id = case.id
        self.case_municipality = case.municipality
        self.principal = principal
