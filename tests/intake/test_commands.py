"""Intake's commands on an existing case and its access rules, without HTTP (the case is reported over HTTP,
then each command runs on a real session of intake's own database)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import access, commands
from services.intake.models import Case, CaseTransfer
from services.intake.schemas import ConsentChange, RiskAssessmentIn
from shared.auth import Principal, Role
from shared.errors import Problem
from shared.events import outbox_table
from tests.intake.conftest import reported
from tests.support import Stack, new_municipality


async def run(stack: Stack, command: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
    """One command in a session and transaction of its own (a refusal rolls back only that one)."""
    async with stack.apps["intake"].state.runtime.sessions() as session, session.begin():
        return await command(session)


async def event_types(stack: Stack, case_id: str) -> list[str]:
    async with stack.apps["intake"].state.runtime.sessions() as session, session.begin():
        payloads = (
            await session.execute(
                sa.select(outbox_table.c.payload)
                .where(outbox_table.c.payload.contains(case_id))
                .order_by(outbox_table.c.id)
            )
        ).scalars().all()
    return [e["type"] for e in map(json.loads, payloads) if e.get("subject") == case_id]


async def test_only_the_coordinator_lowers_a_risk_anyone_else_asks_her_to_review(intake: Stack) -> None:
    town = new_municipality()
    case = await reported(intake, town, risk_answers={"threats_to_kill": True})  # high, reported by m-police
    case_id = uuid.UUID(case["id"])
    state = intake.apps["intake"].state
    police = Principal(sub="p-1", role=Role.police, municipality=town, member_id="m-police")
    coordinator = Principal(sub="c-1", role=Role.coordinator, municipality=town)
    calm = RiskAssessmentIn(risk_answers={"threats_to_kill": False})

    def assessing(principal: Principal) -> Callable[[AsyncSession], Awaitable[Any]]:
        return lambda session: commands.assess_risk(
            session, state.settings, principal, case_id, calm, state.default_screen
        )

    asked = await run(intake, assessing(police))
    assert (asked.review, asked.previous, asked.result.risk_level, asked.case.risk_level) == (
        True, "high", "low", "high"
    )
    assert (await event_types(intake, case["id"]))[-1] == "case.risk_review_requested"
    lowered = await run(intake, assessing(coordinator))
    assert (lowered.review, lowered.case.risk_level) == (False, "low")
    assert (await event_types(intake, case["id"]))[-1] == "case.risk_assessed"
    with pytest.raises(Problem) as hidden:
        await run(intake, assessing(Principal(sub="c-2", role=Role.coordinator, municipality=new_municipality())))
    assert hidden.value.status == 404


async def test_close_and_reopen_once_each_and_consent_by_the_reporter_only(intake: Stack) -> None:
    town = new_municipality()
    case = await reported(intake, town)
    case_id = uuid.UUID(case["id"])
    state = intake.apps["intake"].state
    coordinator = Principal(sub="c-1", role=Role.coordinator, municipality=town)

    def closing(session: AsyncSession) -> Awaitable[Any]:
        return commands.close_case(session, state.settings, state.cipher, coordinator, case_id, "resolved")

    closed = await run(intake, closing)
    assert closed.status == "closed" and closed.close_reason and "resolved" not in closed.close_reason  # sealed
    with pytest.raises(Problem) as twice:
        await run(intake, closing)
    assert twice.value.status == 409
    reopened = await run(intake, lambda session: commands.reopen_case(session, state.settings, coordinator, case_id))
    assert (reopened.status, reopened.closed_at, reopened.close_reason) == ("open", None, None)
    with pytest.raises(Problem) as open_already:
        await run(intake, lambda session: commands.reopen_case(session, state.settings, coordinator, case_id))
    assert open_already.value.status == 409
    assert (await event_types(intake, case["id"]))[-2:] == ["case.closed", "case.reopened"]

    share = ConsentChange(share_with=["shelter"])
    reporter = Principal(sub="p-2", role=Role.police, municipality=town, member_id="m-police")
    changed, consents = await run(
        intake, lambda session: commands.change_consent(session, state.settings, reporter, case_id, share)
    )
    assert changed.id == case_id and [(c.kind, c.given) for c in consents][-1:] == [("shelter", True)]


def test_the_object_level_rules_on_a_case_and_a_transfer_in_hand() -> None:
    town = "elbasan"
    case = Case(id=uuid.uuid4(), municipality=town, reported_by_sub="p-1", reported_by_member_id="m-police")
    coordinator = Principal(sub="c", role=Role.coordinator, municipality=town)
    reporter = Principal(sub="p-9", role=Role.police, municipality=town, member_id="m-police")  # same institution
    referred = Principal(sub="s-1", role=Role.social_services, municipality=town, member_id="m-social")
    assert access.sees_narrative(coordinator, case) and access.sees_narrative(reporter, case)
    assert not access.sees_narrative(referred, case)
    assert access.may_lower_risk(coordinator) and not access.may_lower_risk(reporter)
    assert access.sees_coordinator_detail(coordinator) and not access.sees_coordinator_detail(reporter)
    access.require_consent_changer(coordinator, case)
    access.require_consent_changer(reporter, case)
    with pytest.raises(Problem) as refused:
        access.require_consent_changer(referred, case)
    assert refused.value.status == 403

    transfer = CaseTransfer(case_id=case.id, from_municipality=town, to_municipality="tirana", status="pending")
    access.require_transfer_decider(Principal(sub="c", role=Role.coordinator, municipality="tirana"), transfer)
    for municipality, status in ((town, 403), ("durres", 404)):
        with pytest.raises(Problem) as decided:
            access.require_transfer_decider(Principal(sub="c", role=Role.coordinator, municipality=municipality),
                                            transfer)
        assert decided.value.status == status
