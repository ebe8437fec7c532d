"""The shelter's application layer without HTTP: `commands.py` on a real database session, `access.py`'s
rules on rows in hand and as SQL. Each test uses a municipality of its own."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.shelter import access, commands
from services.shelter.models import Placement, RentBonusApplication, RentBonusPayment, Shelter
from services.shelter.schemas import ApplicationCreate, Decision, PlacementCreate, ShelterCreate
from shared.auth import Principal, Role
from shared.errors import Problem
from shared.events import outbox_table
from tests.support import Stack, new_municipality

SOON = date.today() + timedelta(days=30)


@pytest.fixture
def state(stack: Stack) -> Any:
    return stack.apps["shelter"].state


def coordinator(municipality: str) -> Principal:
    return Principal(sub=f"coord-{municipality}", role=Role.coordinator, municipality=municipality)


def staff_of(shelter: Shelter, municipality: str | None = None) -> Principal:
    return Principal(
        sub=f"staff-{shelter.id}", role=Role.shelter_staff,
        municipality=municipality or shelter.municipality, shelter_id=str(shelter.id),
    )


async def run(state: Any, command: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
    """One command in a session and transaction of its own (a refusal rolls back only that one)."""
    async with state.runtime.sessions() as session, session.begin():
        return await command(session)


async def rows(state: Any, query: Any) -> list[Any]:
    async with state.runtime.sessions() as session, session.begin():
        return list((await session.execute(query)).scalars().all())


async def new_shelter(state: Any, municipality: str, capacity: int = 3) -> Shelter:
    body = ShelterCreate(
        name="Strehëza", operator="NGO", kind="emergency", municipality=municipality, capacity=capacity,
        accepts_children=False, address="Rruga 1", phone="+355690000009",
    )
    async with state.runtime.sessions() as session:  # registration opens its own transactions
        return await commands.register_shelter(
            session, state.settings, state.shelter_sealer, coordinator(municipality), body
        )


async def free_beds(state: Any, shelter_id: uuid.UUID) -> int:
    [free] = await rows(state, sa.select(col(Shelter.free_beds)).where(col(Shelter.id) == shelter_id))
    return int(free)


async def outbox_types(state: Any, subject: str) -> list[str]:
    """The types of the shelter's outbox events about `subject`, oldest first (written with the change)."""
    query = sa.select(outbox_table.c.payload).where(outbox_table.c.payload.contains(subject))
    events = [json.loads(p) for p in await rows(state, query.order_by(outbox_table.c.id))]
    return [e["type"] for e in events if e.get("subject") == subject]


def placing(state: Any, principal: Principal, body: PlacementCreate) -> Callable[[AsyncSession], Awaitable[Any]]:
    return lambda session: commands.start_placement(session, state.settings, state.shelter_config, principal, body)


def discharging(state: Any, principal: Principal, placement_id: uuid.UUID) -> Callable[[AsyncSession], Awaitable[Any]]:
    return lambda session: commands.end_placement(
        session, state.settings, state.text_sealer, principal, placement_id, "moved_on"
    )


async def test_a_placement_takes_beds_and_a_discharge_frees_them(state: Any) -> None:
    town = new_municipality()
    shelter = await new_shelter(state, town, capacity=3)
    body = PlacementCreate(case_id=uuid.uuid4(), shelter_id=shelter.id, adults=2, planned_until=SOON)
    placement, case = await run(state, placing(state, staff_of(shelter), body))
    assert case is None and placement.ended_at is None  # an unknown case is accepted (the default)
    assert await free_beds(state, shelter.id) == 1
    assert await outbox_types(state, str(body.case_id)) == ["placement.started"]

    ended, _ = await run(state, discharging(state, coordinator(town), placement.id))
    assert ended.ended_at is not None
    assert await free_beds(state, shelter.id) == 3
    assert await outbox_types(state, str(body.case_id)) == ["placement.started", "placement.ended"]
    with pytest.raises(Problem) as again:
        await run(state, discharging(state, coordinator(town), placement.id))
    assert again.value.status == 409
    assert await free_beds(state, shelter.id) == 3
    assert await outbox_types(state, str(body.case_id)) == ["placement.started", "placement.ended"]


async def test_refused_placements_change_nothing(state: Any) -> None:
    town = new_municipality()
    shelter = await new_shelter(state, town, capacity=2)
    other = await new_shelter(state, town, capacity=2)
    case_id = uuid.uuid4()
    refusals: list[tuple[Principal, dict[str, int], int]] = [
        (staff_of(other), {}, 403),  # staff of another shelter of the town
        (coordinator(new_municipality()), {}, 404),  # another town's coordinator: no such shelter
        (staff_of(shelter), {"adults": 3}, 409),  # too few beds: never overbooks
        (staff_of(shelter), {"children": 1}, 409),  # this shelter accepts no children
        (staff_of(shelter), {"adults": 0}, 422),  # no bed at all
    ]
    for principal, fields, status in refusals:
        body = PlacementCreate(case_id=case_id, shelter_id=shelter.id, planned_until=SOON, **fields)
        with pytest.raises(Problem) as refused:
            await run(state, placing(state, principal, body))
        assert refused.value.status == status, (principal, fields)
    assert await free_beds(state, shelter.id) == 2
    assert await rows(state, sa.select(Placement).where(col(Placement.case_id) == case_id)) == []
    assert await outbox_types(state, str(case_id)) == []


async def test_stale_or_missing_if_match_and_foreign_staff_keep_the_beds(state: Any) -> None:
    town = new_municipality()
    shelter = await new_shelter(state, town, capacity=4)
    other = await new_shelter(state, town)

    def setting(principal: Principal, if_match: str | None) -> Callable[[AsyncSession], Awaitable[Any]]:
        return lambda session: commands.set_free_beds(session, state.settings, principal, shelter.id, 1, if_match)

    for principal, if_match, status in [
        (staff_of(shelter), None, 428), (staff_of(shelter), 'W/"7"', 412), (staff_of(other), 'W/"1"', 403),
    ]:
        with pytest.raises(Problem) as refused:
            await run(state, setting(principal, if_match))
        assert refused.value.status == status
    assert await free_beds(state, shelter.id) == 4
    updated = await run(state, setting(staff_of(shelter), 'W/"1"'))
    assert (updated.free_beds, updated.version) == (1, 2)
    assert await free_beds(state, shelter.id) == 1


async def test_a_rent_bonus_is_decided_once_within_the_budget_and_paid_once(state: Any) -> None:
    town = new_municipality()
    officer = Principal(sub="housing-1", role=Role.housing_officer, municipality=town)
    social = Principal(sub="social-1", role=Role.social_services, municipality=town, member_id="m-social")
    body = ApplicationCreate(
        case_id=uuid.uuid4(), municipality=town, monthly_rent=Decimal("200.00"), household_size=3, requested_months=6
    )
    app = await run(state, lambda session: commands.submit_application(session, state.shelter_config, social, body))
    approve = Decision(approved=True, monthly_amount=Decimal("150.00"), start_month="2030-11", months=4)

    def deciding(decision: Decision) -> Callable[[AsyncSession], Awaitable[Any]]:
        return lambda session: commands.decide_application(
            session, state.settings, state.text_sealer, officer, app.id, decision
        )

    def budget(year: int, amount: str) -> Callable[[AsyncSession], Awaitable[Any]]:
        return lambda session: commands.set_budget(session, officer, town, year, Decimal(amount))

    with pytest.raises(Problem) as no_budget:
        await run(state, deciding(approve))  # no 2030 budget
    assert no_budget.value.status == 409
    await run(state, budget(2030, "300.00"))
    with pytest.raises(Problem) as short:
        await run(state, deciding(approve))  # 2031 has no budget for its two months
    assert short.value.status == 409
    await run(state, budget(2031, "300.00"))
    assert (await run(state, deciding(approve))).status == "approved"
    with pytest.raises(Problem) as twice:
        await run(state, deciding(Decision(approved=False, reason="changed mind")))
    assert twice.value.status == 409
    with pytest.raises(Problem) as lower:
        await run(state, budget(2030, "299.99"))
    assert lower.value.status == 409  # 300.00 is committed in 2030

    payments = await rows(state, sa.select(RentBonusPayment).where(col(RentBonusPayment.application_id) == app.id))
    months = sorted(p.month for p in payments)
    assert months == [date(2030, 11, 1), date(2030, 12, 1), date(2031, 1, 1), date(2031, 2, 1)]
    first = payments[0].id
    elsewhere = Principal(sub="housing-2", role=Role.housing_officer, municipality=new_municipality())
    with pytest.raises(Problem) as foreign:
        await run(state, lambda session: commands.pay(session, state.settings, elsewhere, first))
    assert foreign.value.status == 404
    paid = await run(state, lambda session: commands.pay(session, state.settings, officer, first))
    assert paid.status == "paid"
    with pytest.raises(Problem) as again:
        await run(state, lambda session: commands.pay(session, state.settings, officer, first))
    assert again.value.status == 409
    totals = await run(state, lambda session: commands.read_budget(session, officer, town, 2030))
    assert (totals.committed, totals.paid) == (Decimal("300.00"), Decimal("150.00"))


async def test_who_sees_a_placement_in_python_and_in_sql(state: Any) -> None:
    town = new_municipality()
    shelter = await new_shelter(state, town)
    other = await new_shelter(state, town)
    body = PlacementCreate(case_id=uuid.uuid4(), shelter_id=shelter.id, planned_until=SOON)
    placement, _ = await run(state, placing(state, coordinator(town), body))
    callers = {
        "coordinator": (coordinator(town), True),
        "own staff": (staff_of(shelter), True),
        "other shelter's staff": (staff_of(other), False),
        "own staff with another town's token": (staff_of(shelter, new_municipality()), False),
        "another town's coordinator": (coordinator(new_municipality()), False),
        "staff with a malformed shelter claim": (
            Principal(sub="s", role=Role.shelter_staff, municipality=town, shelter_id="not-a-uuid"), False
        ),
    }
    for what, (principal, sees) in callers.items():
        assert access.may_see_placement(principal, placement, shelter) is sees, what
        listed = await rows(
            state, sa.select(Placement).where(col(Placement.id) == placement.id, access.visible_placements(principal))
        )
        assert [p.id for p in listed] == ([placement.id] if sees else []), what
        if sees:
            found = await run(state, lambda session: access.visible_placement(session, placement.id, principal))  # noqa: B023
            assert found.id == placement.id
        else:
            with pytest.raises(Problem) as hidden:
                await run(state, lambda session: access.visible_placement(session, placement.id, principal))  # noqa: B023
            assert hidden.value.status == 404, what


def test_contact_details_and_applications_follow_their_rules() -> None:
    town = "elbasan"
    shelter = Shelter(id=uuid.uuid4(), municipality=town, name="S", operator="O", kind="emergency", capacity=1,
                      free_beds=1, accepts_children=False, address="a", phone="p", version=1)
    assert access.sees_contact(coordinator(town), shelter)
    assert access.sees_contact(staff_of(shelter), shelter)
    assert not access.sees_contact(coordinator("tirana"), shelter)
    assert not access.sees_contact(Principal(sub="p", role=Role.police, municipality=town), shelter)
    assert not access.sees_contact(staff_of(shelter, "tirana"), shelter)

    app = RentBonusApplication(
        municipality=town, case_id=uuid.uuid4(), monthly_rent=Decimal("1"), household_size=1, requested_months=1,
        submitted_by_role="social_services", submitted_by_sub="s-1", submitted_by_member_id="m-1",
    )
    readers = {
        Principal(sub="x", role=Role.housing_officer, municipality=town): True,
        Principal(sub="x", role=Role.coordinator, municipality=town): True,
        Principal(sub="s-1", role=Role.social_services, municipality=town): True,  # submitted it
        Principal(sub="s-2", role=Role.social_services, municipality=town, member_id="m-1"): True,  # same institution
        Principal(sub="s-3", role=Role.social_services, municipality=town, member_id="m-2"): False,
        Principal(sub="x", role=Role.housing_officer, municipality="tirana"): False,
    }
    for principal, reads in readers.items():
        assert access.may_read_application(principal, app) is reads, principal


async def test_which_shelters_a_caller_lists(state: Any) -> None:
    town, elsewhere = new_municipality(), new_municipality()
    here, there = await new_shelter(state, town), await new_shelter(state, elsewhere)
    ours = [here.id, there.id]

    async def listed(principal: Principal, municipality: str | None = None) -> set[uuid.UUID]:
        query = sa.select(Shelter).where(col(Shelter.id).in_(ours), access.visible_shelters(principal, municipality))
        return {s.id for s in await rows(state, query)}

    police = Principal(sub="p", role=Role.police, municipality=town)
    national = Principal(sub="a", role=Role.admin, municipality="*")
    assert await listed(police) == {here.id}
    assert await listed(police, town) == {here.id}
    assert await listed(police, elsewhere) == set()  # another municipality's shelters do not exist for her
    assert await listed(national) == {here.id, there.id}
    assert await listed(national, elsewhere) == {there.id}
