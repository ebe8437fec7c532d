"""HTTP routes of the shelter registry, bed availability and placements (CONTRACT §7)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.shelter import domain, events
from services.shelter.contact import ContactSealer
from services.shelter.context import await_case, config_of, known_case, text_sealer_of
from services.shelter.models import CaseProjection, DirectoryMember, Placement, Shelter
from services.shelter.schemas import (
    AvailabilityUpdate,
    Discharge,
    PlacementCreate,
    PlacementOut,
    ShelterCreate,
    ShelterOut,
    Slug,
)
from shared import idempotency
from shared.auth import ALL_ROLES, Principal, Role, allow, require_own_municipality
from shared.db import SessionDep, table_of
from shared.errors import Problem, conflict, forbidden, invalid, not_found
from shared.paging import Cursor, Keyset, Limit, Page, fetch_page
from shared.projection import PROJECTION_RESPONSES
from shared.sealed import TextSealer
from shared.vocab import MemberKind

router = APIRouter(prefix="/v1", tags=["shelters"])

Anyone = Annotated[Principal, Depends(allow(ALL_ROLES))]
Registrar = Annotated[Principal, Depends(allow(Role.admin, Role.coordinator))]
BedKeeper = Annotated[Principal, Depends(allow(Role.shelter_staff, Role.coordinator))]

SHELTERS = table_of(Shelter)
PLACEMENTS = table_of(Placement)


def _now() -> datetime:
    return datetime.now(UTC)


def sees_contact(principal: Principal, shelter: Shelter) -> bool:
    """Address and phone (secret locations): the coordinator and the shelter's own staff only."""
    if principal.municipality != shelter.municipality:
        return False
    if principal.role is Role.coordinator:
        return True
    return principal.role is Role.shelter_staff and principal.shelter_id == str(shelter.id)


def works_at(principal: Principal, shelter_id: uuid.UUID) -> bool:
    return principal.role is Role.shelter_staff and principal.shelter_id == str(shelter_id)


def sealer_of(request: Request) -> ContactSealer:
    sealer: ContactSealer = request.app.state.shelter_sealer
    return sealer


def shelter_out(shelter: Shelter, principal: Principal, sealer: ContactSealer) -> ShelterOut:
    fields: dict[str, Any] = {
        "id": shelter.id,
        "name": shelter.name,
        "operator": shelter.operator,
        "kind": shelter.kind,
        "municipality": shelter.municipality,
        "capacity": shelter.capacity,
        "free_beds": shelter.free_beds,
        "accepts_children": shelter.accepts_children,
        "member_id": shelter.member_id,
        "version": shelter.version,
        "updated_at": shelter.updated_at,
    }
    if sees_contact(principal, shelter):
        for field in ("address", "phone"):
            value = sealer.open(shelter.id, field, getattr(shelter, field))
            if value is not None:
                fields[field] = value
    # Keys absent (not null) for everyone else: the route excludes unset fields.
    return ShelterOut(**fields)


async def load_shelter(
    session: AsyncSession, shelter_id: uuid.UUID, principal: Principal, *, for_update: bool = False
) -> Shelter:
    stmt = sa.select(Shelter).where(SHELTERS.c.id == shelter_id)
    if for_update:
        stmt = stmt.with_for_update()
    shelter = (await session.execute(stmt)).scalar_one_or_none()
    if shelter is None or not principal.sees_municipality(shelter.municipality):
        raise not_found("shelter")
    return shelter


def require_keeper_of(principal: Principal, shelter: Shelter) -> None:
    """Shelter staff act for their own shelter only; the coordinator for any of the municipality."""
    if principal.role is Role.shelter_staff and not works_at(principal, shelter.id):
        raise forbidden("Shelter staff may act for their own shelter only.")


# --- the registry -------------------------------------------------------------------------------


async def _require_shelter_member(session: AsyncSession, member_id: str, municipality: str) -> None:
    """A shelter may claim only a directory member that exists, is active, is of kind `shelter` and of
    its own municipality (from referral's `member.saved`); otherwise staff could borrow the identity of
    the police or of another town's shelter and read the referrals addressed to it."""
    async with session.begin():
        member = await session.get(DirectoryMember, member_id)
    if member is None or member.municipality != municipality or member.kind != MemberKind.shelter or not member.active:
        raise invalid(["body", "member_id"], "not an active directory member of kind shelter in this municipality")


@router.post("/shelters", status_code=201, response_model=ShelterOut, response_model_exclude_unset=True)
async def register_shelter(
    body: ShelterCreate, principal: Registrar, session: SessionDep, request: Request, response: Response
) -> ShelterOut:
    require_own_municipality(principal, body.municipality)
    free = body.capacity if body.free_beds is None else body.free_beds
    if free > body.capacity:
        raise invalid(["body", "free_beds"], "free_beds may not exceed capacity")
    if body.member_id is not None:
        await _require_shelter_member(session, body.member_id, body.municipality)
    now = _now()
    sealer = sealer_of(request)
    shelter_id = uuid.uuid4()
    shelter = Shelter(
        id=shelter_id,
        municipality=body.municipality,
        name=body.name,
        operator=body.operator,
        kind=body.kind.value,
        capacity=body.capacity,
        free_beds=free,
        accepts_children=body.accepts_children,
        address=sealer.seal(shelter_id, "address", body.address),
        phone=sealer.seal(shelter_id, "phone", body.phone),
        member_id=body.member_id,
        version=1,
        created_at=now,
        updated_at=now,
    )
    async with session.begin():
        session.add(shelter)
        await session.flush()
        await events.availability_changed(session, request.app.state.settings, shelter, previous_free_beds=free)
    response.headers["ETag"] = domain.etag(shelter.version)
    response.headers["Location"] = f"/v1/shelters/{shelter.id}"
    return shelter_out(shelter, principal, sealer_of(request))


SHELTER_ORDER = Keyset("shelters", (SHELTERS.c.municipality, SHELTERS.c.name, SHELTERS.c.id))
PLACEMENT_ORDER = Keyset("placements", (PLACEMENTS.c.started_at, PLACEMENTS.c.id), descending=True)


@router.get("/shelters", response_model=Page[ShelterOut], response_model_exclude_unset=True)
async def list_shelters(
    principal: Anyone,
    session: SessionDep,
    request: Request,
    municipality: Slug | None = None,
    min_free_beds: Annotated[int | None, Query(ge=0, le=10_000)] = None,
    accepts_children: bool | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[ShelterOut]:
    """Shelters of the caller's municipality with their free beds; e.g. `min_free_beds=3&accepts_children=true`."""
    if cursor is not None:
        SHELTER_ORDER.decode(cursor)  # a bad cursor is a 422 whatever the filter
    if municipality is not None and not principal.sees_municipality(municipality):
        # Another municipality's shelters do not exist for this caller.
        return Page[ShelterOut](items=[], next_cursor=None)
    stmt = sa.select(Shelter)
    if municipality is not None:
        stmt = stmt.where(SHELTERS.c.municipality == municipality)
    elif principal.municipality != "*":
        stmt = stmt.where(SHELTERS.c.municipality == principal.municipality)
    if min_free_beds is not None:
        stmt = stmt.where(SHELTERS.c.free_beds >= min_free_beds)
    if accepts_children is not None:
        stmt = stmt.where(SHELTERS.c.accepts_children == accepts_children)
    async with session.begin():
        shelters, next_cursor = await fetch_page(session, stmt, SHELTER_ORDER, limit, cursor)
    sealer = sealer_of(request)
    return Page[ShelterOut](items=[shelter_out(s, principal, sealer) for s in shelters], next_cursor=next_cursor)


@router.get("/shelters/{shelter_id}", response_model=ShelterOut, response_model_exclude_unset=True)
async def get_shelter(
    shelter_id: uuid.UUID, principal: Anyone, session: SessionDep, request: Request, response: Response
) -> ShelterOut:
    async with session.begin():
        shelter = await load_shelter(session, shelter_id, principal)
    response.headers["ETag"] = domain.etag(shelter.version)
    return shelter_out(shelter, principal, sealer_of(request))


@router.put("/shelters/{shelter_id}/availability", response_model=ShelterOut, response_model_exclude_unset=True)
async def update_availability(
    shelter_id: uuid.UUID,
    body: AvailabilityUpdate,
    principal: BedKeeper,
    session: SessionDep,
    request: Request,
    response: Response,
    if_match: Annotated[
        str | None, Header(alias="If-Match", description='The ETag of the last read, W/"<version>"')
    ] = None,
) -> ShelterOut:
    """Set the beds free right now. Optimistic concurrency: 428 without If-Match, 412 when it is stale."""
    async with session.begin():
        shelter = await load_shelter(session, shelter_id, principal, for_update=True)
        require_keeper_of(principal, shelter)
        if not if_match or not if_match.strip():
            raise Problem(428, "If-Match with the shelter's current ETag is required.")
        if body.free_beds > shelter.capacity:
            raise invalid(["body", "free_beds"], f"free_beds may not exceed the capacity ({shelter.capacity})")
        if not domain.if_match_allows(if_match, shelter.version):
            raise Problem(
                412,
                "The shelter changed since it was read; read it again.",
                headers={"ETag": domain.etag(shelter.version)},
            )
        previous = shelter.free_beds
        shelter.free_beds = body.free_beds
        shelter.version += 1
        shelter.updated_at = _now()
        await session.flush()
        if previous != shelter.free_beds:
            await events.availability_changed(session, request.app.state.settings, shelter, previous_free_beds=previous)
    response.headers["ETag"] = domain.etag(shelter.version)
    return shelter_out(shelter, principal, sealer_of(request))


# --- placements ----------------------------------------------------------------------------------


def placement_out(placement: Placement, case: CaseProjection | None, sealer: TextSealer) -> PlacementOut:
    return PlacementOut(
        id=placement.id,
        case_id=placement.case_id,
        case_number=case.case_number if case else None,
        needs=list(case.needs) if case else [],
        shelter_id=placement.shelter_id,
        municipality=placement.municipality,
        adults=placement.adults,
        children=placement.children,
        planned_until=placement.planned_until,
        started_at=placement.started_at,
        ended_at=placement.ended_at,
        end_reason=sealer.open("placements", placement.id, "end_reason", placement.end_reason),
        active=placement.ended_at is None,
    )


@router.post("/placements", status_code=201, response_model=PlacementOut, responses=PROJECTION_RESPONSES)
async def place(
    body: PlacementCreate,
    principal: BedKeeper,
    session: SessionDep,
    request: Request,
    response: Response,
    idempotency_key: idempotency.IdempotencyKey = None,
) -> PlacementOut | JSONResponse:
    """Take `adults + children` beds atomically; 409 when too few are free (never overbooks).

    With `Idempotency-Key`, a retry returns the first placement and takes no more beds.
    """
    beds = body.adults + body.children
    if beds < 1:
        raise invalid(["body", "adults"], "a placement needs at least one bed")
    if body.planned_until < date.today():
        raise invalid(["body", "planned_until"], "planned_until may not be in the past")
    once = idempotency.IdempotentRequest.of(
        scope=principal.municipality, caller=principal.sub, key=idempotency_key, body=body
    )
    await await_case(session, request, body.case_id)
    async with session.begin():
        if await once.claim(session):
            placement, out = await _take_beds(session, body, principal, request, beds)
            await once.remember(session, 201, out)
            response.headers["Location"] = f"/v1/placements/{placement.id}"
            return out
    return await once.replay(session)


async def _take_beds(
    session: AsyncSession, body: PlacementCreate, principal: Principal, request: Request, beds: int
) -> tuple[Placement, PlacementOut]:
    settings = request.app.state.settings
    shelter = await load_shelter(session, body.shelter_id, principal)
    session.expunge(shelter)  # a snapshot: the beds change only through the conditional UPDATE below
    require_keeper_of(principal, shelter)
    if body.children > 0 and not shelter.accepts_children:
        raise conflict(
            "This shelter does not accept children.",
            type_="https://mkr.al/problems/children-not-accepted",
        )
    case = await known_case(session, body.case_id, shelter.municipality, config_of(request))
    # One conditional UPDATE: the row lock serialises racing placements, the WHERE refuses overbooking.
    now = _now()
    taken = (
        await session.execute(
            sa.update(SHELTERS)
            .where(SHELTERS.c.id == shelter.id, SHELTERS.c.free_beds >= beds)
            .values(free_beds=SHELTERS.c.free_beds - beds, version=SHELTERS.c.version + 1, updated_at=now)
            .returning(SHELTERS.c.free_beds, SHELTERS.c.version)
        )
    ).first()
    if taken is None:
        raise conflict(
            f"Too few free beds: {beds} needed.",
            type_="https://mkr.al/problems/no-free-bed",
            beds_needed=beds,
        )
    shelter.free_beds, shelter.version, shelter.updated_at = taken.free_beds, taken.version, now
    placement = Placement(
        municipality=shelter.municipality,
        shelter_id=shelter.id,
        case_id=body.case_id,
        adults=body.adults,
        children=body.children,
        planned_until=body.planned_until,
        started_at=now,
        created_by_sub=principal.sub,
    )
    session.add(placement)
    await session.flush()
    case_number = case.case_number if case else None
    await events.placement_started(session, settings, placement, case_number)
    await events.availability_changed(session, settings, shelter, previous_free_beds=shelter.free_beds + beds)
    return placement, placement_out(placement, case, text_sealer_of(request))


async def load_placement(
    session: AsyncSession, placement_id: uuid.UUID, principal: Principal, *, for_update: bool = False
) -> Placement:
    stmt = sa.select(Placement).where(PLACEMENTS.c.id == placement_id)
    if for_update:
        stmt = stmt.with_for_update()
    placement = (await session.execute(stmt)).scalar_one_or_none()
    if placement is None:
        raise not_found("placement")
    # Staff see their own shelter's placements only (also of a case transferred elsewhere since);
    # the coordinator those of her municipality's cases.
    if principal.role is Role.shelter_staff:
        shelter = await session.get(Shelter, placement.shelter_id)
        if not works_at(principal, placement.shelter_id) or shelter is None or (
            shelter.municipality != principal.municipality
        ):
            raise not_found("placement")
    elif placement.municipality != principal.municipality:
        raise not_found("placement")
    return placement


@router.post("/placements/{placement_id}/discharge", response_model=PlacementOut)
async def discharge(
    placement_id: uuid.UUID, body: Discharge, principal: BedKeeper, session: SessionDep, request: Request
) -> PlacementOut:
    """End a placement and free its beds; a second discharge is 409."""
    settings = request.app.state.settings
    async with session.begin():
        placement = await load_placement(session, placement_id, principal, for_update=True)
        if placement.ended_at is not None:
            raise conflict("The placement has already ended.")
        beds = placement.adults + placement.children
        now = _now()
        # LEAST: staff may have counted these beds free already; never above capacity.
        before = (
            await session.execute(
                sa.select(SHELTERS.c.free_beds).where(SHELTERS.c.id == placement.shelter_id).with_for_update()
            )
        ).scalar_one()
        await session.execute(
            sa.update(SHELTERS)
            .where(SHELTERS.c.id == placement.shelter_id)
            .values(
                free_beds=sa.func.least(SHELTERS.c.capacity, SHELTERS.c.free_beds + beds),
                version=SHELTERS.c.version + 1,
                updated_at=now,
            )
        )
        placement.ended_at = now
        placement.end_reason = text_sealer_of(request).seal("placements", placement.id, "end_reason", body.reason)
        await session.flush()
        case = await session.get(CaseProjection, placement.case_id)
        await events.placement_ended(session, settings, placement, case.case_number if case else None, body.reason)
        shelter = await session.get(Shelter, placement.shelter_id, populate_existing=True)
        assert shelter is not None
        if before != shelter.free_beds:
            await events.availability_changed(session, settings, shelter, previous_free_beds=before)
    return placement_out(placement, case, text_sealer_of(request))


@router.get("/placements", response_model=Page[PlacementOut])
async def list_placements(
    principal: BedKeeper,
    session: SessionDep,
    request: Request,
    shelter_id: uuid.UUID | None = None,
    case_id: uuid.UUID | None = None,
    active: bool | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[PlacementOut]:
    """Placements of the municipality (shelter staff: of their own shelter only), newest first."""
    if cursor is not None:
        PLACEMENT_ORDER.decode(cursor)  # a bad cursor is a 422 whatever the filter
    stmt = (
        sa.select(Placement, CaseProjection)
        .outerjoin(CaseProjection, col(CaseProjection.case_id) == PLACEMENTS.c.case_id)
    )
    if principal.role is Role.shelter_staff:
        own = _uuid_or_none(principal.shelter_id)
        if own is None or (shelter_id is not None and shelter_id != own):
            return Page[PlacementOut](items=[])
        # Staff see their shelter's placements, also of a case transferred elsewhere since (CONTRACT §10).
        in_own_municipality = sa.select(SHELTERS.c.id).where(
            SHELTERS.c.id == own, SHELTERS.c.municipality == principal.municipality
        )
        stmt = stmt.where(PLACEMENTS.c.shelter_id == own, PLACEMENTS.c.shelter_id.in_(in_own_municipality))
    else:
        stmt = stmt.where(PLACEMENTS.c.municipality == principal.municipality)
    if shelter_id is not None:
        stmt = stmt.where(PLACEMENTS.c.shelter_id == shelter_id)
    if case_id is not None:
        stmt = stmt.where(PLACEMENTS.c.case_id == case_id)
    if active is True:
        stmt = stmt.where(PLACEMENTS.c.ended_at.is_(None))
    elif active is False:
        stmt = stmt.where(PLACEMENTS.c.ended_at.is_not(None))
    async with session.begin():
        rows, next_cursor = await fetch_page(session, stmt, PLACEMENT_ORDER, limit, cursor, scalars=False)
    sealer = text_sealer_of(request)
    return Page[PlacementOut](items=[placement_out(p, c, sealer) for p, c in rows], next_cursor=next_cursor)


@router.get("/placements/{placement_id}", response_model=PlacementOut)
async def get_placement(
    placement_id: uuid.UUID, principal: BedKeeper, session: SessionDep, request: Request
) -> PlacementOut:
    async with session.begin():
        placement = await load_placement(session, placement_id, principal)
        case = await session.get(CaseProjection, placement.case_id)
    return placement_out(placement, case, text_sealer_of(request))


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None
