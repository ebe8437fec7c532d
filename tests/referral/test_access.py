"""Referral's object-level rules (services/referral/access.py), called directly on the service's database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.referral import access
from services.referral.models import EtnMeeting, PlanAction, Referral, ShelterMember
from shared.errors import Problem
from shared.settings import Settings
from tests.referral.direct import principal, seed_case, seed_member, session_of
from tests.support import Stack, new_municipality


async def _referral(stack: Stack, case_id: uuid.UUID, municipality: str, to: uuid.UUID, **fields: object) -> Referral:
    async with session_of(stack) as session, session.begin():
        referral = Referral(
            case_id=case_id, case_number="D-1", municipality=municipality, to_member_id=to, to_member_kind="police",
            urgency="normal", reason="manual", origin="manual", sender_role="coordinator", created_by="someone",
            ack_due_at=datetime.now(UTC) + timedelta(hours=1), history=[], **fields,
        )  # fmt: skip
        session.add(referral)
    return referral


async def test_the_members_one_acts_for_are_the_claim_and_the_shelters_member_of_the_municipality(
    stack: Stack,
) -> None:
    m, other = new_municipality(), new_municipality()
    shelter_member = await seed_member(stack, m, "shelter")
    own_shelter, foreign_shelter = uuid.uuid4(), uuid.uuid4()
    async with session_of(stack) as session, session.begin():
        session.add(ShelterMember(shelter_id=own_shelter, member_id=shelter_member.id, municipality=m))
        session.add(ShelterMember(shelter_id=foreign_shelter, member_id=shelter_member.id, municipality=other))
    claimed = uuid.uuid4()
    async with session_of(stack) as session:
        assert await access.member_ids_of(session, principal("police", m, member_id=claimed)) == {claimed}
        staff = principal("shelter_staff", m, member_id=claimed, shelter_id=str(own_shelter))
        assert await access.member_ids_of(session, staff) == {claimed, shelter_member.id}
        # The shelter is another municipality's: its member is not this caller's.
        abroad = principal("shelter_staff", m, shelter_id=str(foreign_shelter))
        assert await access.member_ids_of(session, abroad) == set()
        # Claims that are not UUIDs name nobody (and are no error).
        bad = principal("shelter_staff", m, shelter_id="not-a-uuid")
        assert await access.member_ids_of(session, bad) == set()
        # Only shelter staff act for their shelter's member.
        assert await access.member_ids_of(session, principal("police", m, shelter_id=str(own_shelter))) == set()


async def test_a_case_is_known_to_the_coordinator_its_reporter_and_an_institution_it_was_referred_to(
    stack: Stack,
) -> None:
    m = new_municipality()
    reporter, receiver, stranger = [await seed_member(stack, m, kind) for kind in ("police", "health", "ngo")]
    case = await seed_case(stack, m, reported_by_member_id=str(reporter.id))
    await _referral(stack, case.case_id, m, receiver.id, status="declined")
    async with session_of(stack) as session:
        for caller in (
            principal("coordinator", m),
            principal("police", m, member_id=reporter.id),
            principal("health", m, member_id=receiver.id),  # any referral, even a declined one
        ):
            assert (await access.case_known_to(session, caller, case.case_id)).case_id == case.case_id
        for caller in (
            principal("ngo", m, member_id=stranger.id),
            principal("ngo", m),  # no member at all
            principal("coordinator", new_municipality()),
        ):
            with pytest.raises(Problem) as refused:
                await access.case_known_to(session, caller, case.case_id)
            assert (refused.value.status, refused.value.detail) == (404, "No such case.")


async def test_referrals_are_seen_by_the_coordinator_the_receiver_and_the_sender_and_acted_on_by_role(
    stack: Stack,
) -> None:
    m = new_municipality()
    sender, receiver, stranger = [await seed_member(stack, m, kind) for kind in ("police", "health", "ngo")]
    case = await seed_case(stack, m)
    referral = await _referral(stack, case.case_id, m, receiver.id, sender_member_id=str(sender.id))
    coordinator = principal("coordinator", m)
    as_sender = principal("police", m, member_id=sender.id)
    as_receiver = principal("health", m, member_id=receiver.id)
    as_stranger = principal("ngo", m, member_id=stranger.id)
    async with session_of(stack) as session:
        for caller in (coordinator, as_sender, as_receiver):
            assert (await access.visible_referral(session, caller, referral.id)).id == referral.id
        for caller in (as_stranger, principal("coordinator", new_municipality())):
            with pytest.raises(Problem) as hidden:
                await access.visible_referral(session, caller, referral.id)
            assert hidden.value.status == 404
        mine = {caller.role: await access.member_ids_of(session, caller) for caller in (as_sender, as_receiver)}
    assert access.may_act_on_referral(as_receiver, referral, "accept", mine[as_receiver.role])
    assert not access.may_act_on_referral(as_sender, referral, "accept", mine[as_sender.role])
    assert not access.may_act_on_referral(coordinator, referral, "acknowledge", set())
    assert access.may_act_on_referral(as_sender, referral, "cancel", mine[as_sender.role])
    assert access.may_act_on_referral(coordinator, referral, "cancel", set())
    assert not access.may_act_on_referral(as_receiver, referral, "cancel", mine[as_receiver.role])
    # The author of a referral made without a member claim may cancel it too.
    author = principal("police", m)
    authored = Referral(**{**referral.model_dump(), "sender_member_id": None, "created_by": author.sub})
    assert access.may_act_on_referral(author, authored, "cancel", set())


async def test_a_case_plan_shows_an_institution_its_own_actions_and_hides_the_case_without_any(stack: Stack) -> None:
    m = new_municipality()
    mine, theirs = await seed_member(stack, m, "health"), await seed_member(stack, m, "police")
    case = await seed_case(stack, m)
    meeting_id = uuid.uuid4()
    action = PlanAction(
        meeting_id=meeting_id, case_id=case.case_id, case_number=case.case_number, municipality=m, action="",
        responsible_member_id=mine.id, due_date=case.reported_at.date(),
    )  # fmt: skip
    async with session_of(stack) as session, session.begin():
        session.add(EtnMeeting(id=meeting_id, municipality=m, kind="etn", scheduled_for=case.reported_at,
                               created_by="test"))  # fmt: skip
        await session.flush()
        session.add(action)
    async with session_of(stack) as session:
        _, rows = await access.visible_case_plan(session, principal("coordinator", m), case.case_id)
        assert [r.id for r in rows] == [action.id]
        _, rows = await access.visible_case_plan(session, principal("health", m, member_id=mine.id), case.case_id)
        assert [r.id for r in rows] == [action.id]
        with pytest.raises(Problem) as hidden:
            await access.visible_case_plan(session, principal("police", m, member_id=theirs.id), case.case_id)
        assert (hidden.value.status, hidden.value.detail) == (404, "No such case.")
        responsible = principal("health", m, member_id=mine.id)
        assert (await access.own_plan_action(session, responsible, action.id)).id == action.id
        for caller in (principal("police", m, member_id=theirs.id), principal("coordinator", new_municipality())):
            with pytest.raises(Problem) as refused:
                await access.own_plan_action(session, caller, action.id)
            assert (refused.value.status, refused.value.detail) == (404, "No such plan action.")


def test_a_report_covers_the_coordinators_own_municipality_or_the_one_the_auditor_names(settings: Settings) -> None:
    coordinator, auditor = principal("coordinator", "korce"), principal("auditor", "*")
    assert access.report_scope(coordinator, None) == "korce"
    assert access.report_scope(coordinator, "korce") == "korce"
    assert access.report_scope(auditor, "*") == "*"
    assert access.report_scope(auditor, "korce") == "korce"
    with pytest.raises(Problem) as other:
        access.report_scope(coordinator, "tirane")
    assert other.value.status == 404
    with pytest.raises(Problem) as unnamed:
        access.report_scope(auditor, None)
    assert unnamed.value.status == 422
    assert access.min_cell(coordinator, settings) is None
    assert access.min_cell(auditor, settings) == settings.reports_min_cell
