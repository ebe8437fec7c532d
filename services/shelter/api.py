"""HTTP routes of the shelter registry, bed availability and placements (CONTRACT §7)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlmodel import col

from services.shelter import access, commands, domain
from services.shelter.contact import ContactSealer
from services.shelter.context import await_case, config_of, text_sealer_of
from services.shelter.models import CaseProjection, Placement, Shelter
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
from shared.auth import ALL_ROLES, Principal, Role, allow
from shared.db import SessionDep, table_of
from shared.paging import Cursor, Keyset, Limit, Page, fetch_page
from shared.projection import PROJECTION_RESPONSES
from shared.sealed import TextSealer

router = APIRouter(prefix="/v1", tags=["shelters"])

Anyone = Annotated[Principal, Depends(allow(ALL_ROLES))]
Registrar = Annotated[Principal, Depends(allow(Role.admin, Role.coordinator))]
BedKeeper = Annotated[Principal, Depends(allow(Role.shelter_staff, Role.coordinator))]

SHELTERS = table_of(Shelter)
PLACEMENTS = table_of(Placement)


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
    if access.sees_contact(principal, shelter):
        for field in ("address", "phone"):
            value = sealer.open(shelter.id, field, getattr(shelter, field))
            if value is not None:
                fields[field] = value
    # Keys absent (not null) for everyone else: the route excludes unset fields.
    return ShelterOut(**fields)


@router.post("/shelters", status_code=201, response_model=ShelterOut, response_model_exclude_unset=True)
async def register_shelter(
    body: ShelterCreate, principal: Registrar, session: SessionDep, request: Request, response: Response
) -> ShelterOut:
    shelter = await commands.register_shelter(session, request.app.state.settings, sealer_of(request), principal, body)
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
    stmt = sa.select(Shelter).where(access.visible_shelters(principal, municipality))
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
        shelter = await access.visible_shelter(session, shelter_id, principal)
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
        shelter = await commands.set_free_beds(
            session, request.app.state.settings, principal, shelter_id, body.free_beds, if_match
        )
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
    commands.check_placement(body, date.today())
    once = idempotency.IdempotentRequest.of(
        scope=principal.municipality, caller=principal.sub, key=idempotency_key, body=body
    )
    await await_case(session, request, body.case_id)
    async with session.begin():
        if await once.claim(session):
            placement, case = await commands.start_placement(
                session, request.app.state.settings, config_of(request), principal, body
            )
            out = placement_out(placement, case, text_sealer_of(request))
            await once.remember(session, 201, out)
            response.headers["Location"] = f"/v1/placements/{placement.id}"
            return out
    return await once.replay(session)


@router.post("/placements/{placement_id}/discharge", response_model=PlacementOut)
async def discharge(
    placement_id: uuid.UUID, body: Discharge, principal: BedKeeper, session: SessionDep, request: Request
) -> PlacementOut:
    """End a placement and free its beds; a second discharge is 409."""
    async with session.begin():
        placement, case = await commands.end_placement(
            session, request.app.state.settings, text_sealer_of(request), principal, placement_id, body.reason
        )
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
    # Staff see their shelter's placements, also of a case transferred elsewhere since (CONTRACT §10).
    stmt = (
        sa.select(Placement, CaseProjection)
        .outerjoin(CaseProjection, col(CaseProjection.case_id) == PLACEMENTS.c.case_id)
        .where(access.visible_placements(principal))
    )
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
        placement = await access.visible_placement(session, placement_id, principal)
        case = await session.get(CaseProjection, placement.case_id)
    return placement_out(placement, case, text_sealer_of(request))

