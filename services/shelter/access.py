"""Who may see or act on a shelter, a placement, a rent-bonus application, a payment or a budget (CONTRACT §7).

The role a route admits is its `shared.auth` dependency; these are the object-level rules behind it, in one
place. Something the caller may not see answers 404 like something that does not exist; something the caller
sees but may not act on answers 403.

- A shelter: any role of its municipality sees it; its address and phone (secret locations) only the
  coordinator and the shelter's own staff (`sees_contact`). Staff act for their own shelter only; the
  coordinator for any of the municipality (`require_keeper_of`).
- A placement: the coordinator sees her municipality's; staff see their own shelter's (also of a case
  transferred elsewhere since, CONTRACT §10), and only while their shelter is of their municipality.
- A rent-bonus application: its municipality's coordinator and housing office; social services only the
  applications they or their institution submitted.
- A payment and a budget: the municipality's housing office (the routes admit no other role to act).
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.shelter.models import Placement, RentBonusApplication, RentBonusPayment, Shelter
from shared.auth import Principal, Role
from shared.db import table_of
from shared.errors import forbidden, not_found

SHELTERS = table_of(Shelter)
PLACEMENTS = table_of(Placement)
APPS = table_of(RentBonusApplication)


# --- shelters -----------------------------------------------------------------------------------


def works_at(principal: Principal, shelter_id: uuid.UUID) -> bool:
    return principal.role is Role.shelter_staff and principal.shelter_id == str(shelter_id)


def sees_contact(principal: Principal, shelter: Shelter) -> bool:
    """Address and phone (secret locations): the coordinator and the shelter's own staff only."""
    if principal.municipality != shelter.municipality:
        return False
    if principal.role is Role.coordinator:
        return True
    return works_at(principal, shelter.id)


def require_keeper_of(principal: Principal, shelter: Shelter) -> None:
    """Shelter staff act for their own shelter only; the coordinator for any of the municipality."""
    if principal.role is Role.shelter_staff and not works_at(principal, shelter.id):
        raise forbidden("Shelter staff may act for their own shelter only.")


async def visible_shelter(
    session: AsyncSession, shelter_id: uuid.UUID, principal: Principal, *, for_update: bool = False
) -> Shelter:
    """The shelter if it is of a municipality the caller sees; 404 otherwise."""
    stmt = sa.select(Shelter).where(SHELTERS.c.id == shelter_id)
    if for_update:
        stmt = stmt.with_for_update()
    shelter = (await session.execute(stmt)).scalar_one_or_none()
    if shelter is None or not principal.sees_municipality(shelter.municipality):
        raise not_found("shelter")
    return shelter


def visible_shelters(principal: Principal, municipality: str | None = None) -> sa.ColumnElement[bool]:
    """Shelters the caller may list (of `municipality`, when given): their own municipality's, every one for
    a `*` token; another municipality's do not exist for the caller (the clause matches none)."""
    if municipality is not None:
        if not principal.sees_municipality(municipality):
            return sa.false()
        return SHELTERS.c.municipality == municipality
    if principal.municipality == "*":
        return sa.true()
    return SHELTERS.c.municipality == principal.municipality


# --- placements ---------------------------------------------------------------------------------


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


def own_shelter(principal: Principal) -> uuid.UUID | None:
    """The shelter a staff token names (None for other roles or a malformed claim)."""
    return _uuid_or_none(principal.shelter_id) if principal.role is Role.shelter_staff else None


def may_see_placement(principal: Principal, placement: Placement, shelter: Shelter | None) -> bool:
    """`shelter` is the placement's shelter (staff only need it)."""
    if principal.role is Role.shelter_staff:
        return (
            works_at(principal, placement.shelter_id)
            and shelter is not None
            and shelter.municipality == principal.municipality
        )
    return placement.municipality == principal.municipality


def visible_placements(principal: Principal) -> sa.ColumnElement[bool]:
    """`may_see_placement` as a WHERE clause (lists filter in SQL)."""
    if principal.role is Role.shelter_staff:
        own = own_shelter(principal)
        if own is None:
            return sa.false()
        in_own_municipality = sa.select(SHELTERS.c.id).where(
            SHELTERS.c.id == own, SHELTERS.c.municipality == principal.municipality
        )
        return sa.and_(PLACEMENTS.c.shelter_id == own, PLACEMENTS.c.shelter_id.in_(in_own_municipality))
    return PLACEMENTS.c.municipality == principal.municipality


async def visible_placement(
    session: AsyncSession, placement_id: uuid.UUID, principal: Principal, *, for_update: bool = False
) -> Placement:
    """The placement if the caller may see it; 404 otherwise."""
    stmt = sa.select(Placement).where(PLACEMENTS.c.id == placement_id)
    if for_update:
        stmt = stmt.with_for_update()
    placement = (await session.execute(stmt)).scalar_one_or_none()
    if placement is None:
        raise not_found("placement")
    shelter = await session.get(Shelter, placement.shelter_id) if principal.role is Role.shelter_staff else None
    if not may_see_placement(principal, placement, shelter):
        raise not_found("placement")
    return placement


# --- rent bonus ---------------------------------------------------------------------------------


def may_read_application(principal: Principal, app: RentBonusApplication) -> bool:
    if app.municipality != principal.municipality:
        return False
    if principal.role is Role.social_services:
        # Social services follow the applications their institution (or they) submitted.
        return app.submitted_by_sub == principal.sub or (
            principal.member_id is not None and app.submitted_by_member_id == principal.member_id
        )
    return True


def readable_applications(principal: Principal) -> sa.ColumnElement[bool]:
    """`may_read_application` as a WHERE clause: lists filter in SQL, never in Python after a fixed fetch."""
    own = APPS.c.municipality == principal.municipality
    if principal.role is Role.social_services:
        mine = APPS.c.submitted_by_sub == principal.sub
        if principal.member_id is not None:
            mine = sa.or_(mine, APPS.c.submitted_by_member_id == principal.member_id)
        return sa.and_(own, mine)
    return own


async def readable_application(
    session: AsyncSession, application_id: uuid.UUID, principal: Principal, *, for_update: bool = False
) -> RentBonusApplication:
    stmt = sa.select(RentBonusApplication).where(APPS.c.id == application_id)
    if for_update:
        stmt = stmt.with_for_update()
    app = (await session.execute(stmt)).scalar_one_or_none()
    if app is None or not may_read_application(principal, app):
        raise not_found("rent-bonus application")
    return app


def may_handle_payment(principal: Principal, payment: RentBonusPayment) -> bool:
    return payment.municipality == principal.municipality


def require_budget_holder(principal: Principal, municipality: str) -> None:
    """A budget is set by its own municipality's housing office; another's does not exist (404)."""
    if municipality != principal.municipality:
        raise not_found("budget")


def require_budget_reader(principal: Principal, municipality: str) -> None:
    if not principal.sees_municipality(municipality):
        raise not_found("budget")
