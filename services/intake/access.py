"""Who may see a case and act on it (CONTRACT §2): its municipality, and for an institution a referral
that lets it read; within a visible case, who sees its narrative and who may change what.

A case the caller may not see answers 404 like one that does not exist (`CaseHidden`); the app records
the attempt in the case's audit trail (`trail.record_denied`). A visible case the caller may not change
in that way answers 403.

- See a case: the coordinator of its municipality; an institution of it, the cases it reported or was
  referred (`get_visible_case`, the rule `domain.can_read_case`).
- Its narrative: the coordinator and the reporting institution (`sees_narrative`); its close reason, the
  other cases of the same person and the possible duplicates: the coordinator (`sees_coordinator_detail`).
- Lower its risk level: the coordinator only; anyone else's lower result asks her to review (`may_lower_risk`).
- Change its consent: the coordinator and the reporting institution (`require_consent_changer`).
- Its audit trail: the coordinator and the auditor (the route admits the roles) of its municipality
  (`audited_case`).
- Decide a transfer: the receiving municipality's coordinator; the sender sees it (403), anyone else not (404)
  (`require_transfer_decider`).
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.intake import domain
from services.intake.models import Case, CaseTransfer, ReferralAccess
from shared.auth import Principal, Role
from shared.errors import Problem, forbidden, not_found


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


def sees_narrative(principal: Principal, case: Case) -> bool:
    """"Share only what the recipient needs": the narrative goes to the coordinator and the reporter only."""
    return principal.role is Role.coordinator or domain.is_reporter(
        principal, case.reported_by_sub, case.reported_by_member_id
    )


def sees_coordinator_detail(principal: Principal) -> bool:
    """The close reason, the person's other cases and the possible duplicates: the coordinator's."""
    return principal.role is Role.coordinator


def may_lower_risk(principal: Principal) -> bool:
    """CONTRACT §2: only the coordinator lowers a case's risk level."""
    return principal.role is Role.coordinator


def require_consent_changer(principal: Principal, case: Case) -> None:
    """CONTRACT §2: consent binds: only the coordinator and the institution that reported the case change it."""
    if principal.role is not Role.coordinator and not domain.is_reporter(
        principal, case.reported_by_sub, case.reported_by_member_id
    ):
        raise forbidden("Only the coordinator and the institution that reported the case may change consent.")


async def audited_case(session: AsyncSession, principal: Principal, case_id: uuid.UUID) -> Case:
    """The case whose audit trail the caller reads: of a municipality the caller sees; 404 otherwise."""
    case = await session.get(Case, case_id)
    if case is None or not principal.sees_municipality(case.municipality):
        raise not_found("case")
    return case


def require_transfer_decider(principal: Principal, transfer: CaseTransfer) -> None:
    """404 unless the caller's municipality is a side of the transfer; 403 for the sender (it is hers to
    see, not to decide)."""
    if principal.municipality not in (transfer.from_municipality, transfer.to_municipality):
        raise not_found("transfer")
    if principal.municipality != transfer.to_municipality:
        raise forbidden("Only the coordinator of the receiving municipality decides a transfer.")


class CaseHidden(Problem):
    """404 for a case that exists but is not the caller's to see, like one that does not exist. The app's
    handler records the attempt in the case's audit trail once the request's transaction is over."""

    def __init__(self, case: Case, principal: Principal) -> None:
        super().__init__(404, "No such case.")
        self.case_id = case.id
        self.case_municipality = case.municipality
        self.principal = principal
