"""Referral's commands (services/referral/commands/), called without HTTP on the service's database:
each enforces its rules before it writes, and writes the change with its event in one transaction."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import col

from services.referral import routing
from services.referral.commands import directory, meetings, referrals
from services.referral.models import CaseFact, EtnMeeting, PlanAction, Referral, RoutingDecision
from services.referral.schemas import DecisionIn, MeetingIn, MinutesIn, ReferralIn, RoutingRulesBody
from shared.errors import Problem
from shared.events import make_event
from tests.referral.direct import principal, seed_case, seed_member, session_of, unit_of_work
from tests.referral.helpers import published
from tests.support import Stack, new_municipality


async def _rows(stack: Stack, model: type, *where: sa.ColumnElement[bool]) -> list:  # type: ignore[type-arg]
    async with session_of(stack) as session:
        return list((await session.execute(sa.select(model).where(*where))).scalars())


async def test_a_manual_referral_needs_consent_an_exception_or_an_override_and_is_made_once(stack: Stack) -> None:
    m = new_municipality()
    police = await seed_member(stack, m, "police")
    child_protection = await seed_member(stack, m, "child_protection")
    inactive = await seed_member(stack, m, "health", active=False)
    case = await seed_case(stack, m, children_count=1, consent_share_with=["social_services"])
    coordinator = principal("coordinator", m)

    async def create(**fields: object) -> Referral:
        async with session_of(stack) as session:
            command = ReferralIn.model_validate({"case_id": case.case_id, "urgency": "normal", **fields})
            return await referrals.create_referral(unit_of_work(stack, session, coordinator), command)

    with pytest.raises(Problem) as no_consent:
        await create(to_member_id=police.id)
    assert no_consent.value.status == 409
    assert no_consent.value.type == referrals.CONSENT_REQUIRED
    with pytest.raises(Problem) as asleep:
        await create(to_member_id=inactive.id, consent_override_reason="danger now")
    assert (asleep.value.status, asleep.value.detail) == (409, "The member is inactive.")
    assert await _rows(stack, Referral, col(Referral.case_id) == case.case_id) == []

    excepted = await create(to_member_id=child_protection.id)  # a child in the case: no consent needed
    assert (excepted.legal_exception, excepted.consent_override_reason) == ("child_at_risk", None)
    overridden = await create(to_member_id=police.id, consent_override_reason="danger now", note="call first")
    sealer = stack.apps["referral"].state.sealer
    assert overridden.legal_exception is None
    assert overridden.consent_override_reason != "danger now"  # sealed at rest
    assert sealer.open("referrals", overridden.id, "consent_override_reason", overridden.consent_override_reason) == (
        "danger now"
    )
    assert sealer.open("referrals", overridden.id, "note", overridden.note) == "call first"
    assert overridden.sender_role == "coordinator" and overridden.created_by == coordinator.sub
    assert overridden.history[0]["status"] == "pending"
    with pytest.raises(Problem) as twice:
        await create(to_member_id=police.id, consent_override_reason="danger now")
    assert twice.value.status == 409 and twice.value.extra == {"referral_id": str(overridden.id)}

    made = await _rows(stack, Referral, col(Referral.case_id) == case.case_id)
    assert {r.id for r in made} == {excepted.id, overridden.id}
    announced = await published(stack, "referral.created", case_id=str(case.case_id))
    assert sorted(e["data"]["referral_id"] for e in announced) == sorted(str(r.id) for r in made)


async def test_acting_on_a_referral_checks_the_input_the_actor_and_the_transition(stack: Stack) -> None:
    m = new_municipality()
    sender, receiver = await seed_member(stack, m, "police"), await seed_member(stack, m, "social_services")
    case = await seed_case(stack, m, reported_by_member_id=str(sender.id))
    as_sender = principal("police", m, member_id=sender.id)
    as_receiver = principal("social_services", m, member_id=receiver.id)
    async with session_of(stack) as session:
        made = await referrals.create_referral(
            unit_of_work(stack, session, as_sender),
            ReferralIn(case_id=case.case_id, to_member_id=receiver.id, urgency="high"),
        )

    async def act(who: object, action: str, **text: str) -> Referral:
        async with session_of(stack) as session:
            command = referrals.ActOnReferral(made.id, action, **text)  # type: ignore[arg-type]
            return await referrals.act_on_referral(unit_of_work(stack, session, who), command)  # type: ignore[arg-type]

    with pytest.raises(Problem) as no_reason:
        await act(as_receiver, "decline")
    assert no_reason.value.status == 422
    with pytest.raises(Problem) as not_theirs:
        await act(as_sender, "acknowledge")
    assert (not_theirs.value.status, not_theirs.value.detail) == (403, "Only the receiving institution may do this.")
    with pytest.raises(Problem) as no_cancel:
        await act(as_receiver, "cancel")
    assert no_cancel.value.status == 403
    with pytest.raises(Problem) as hidden:
        await act(principal("social_services", new_municipality(), member_id=receiver.id), "acknowledge")
    assert hidden.value.status == 404
    (unchanged,) = await _rows(stack, Referral, col(Referral.id) == made.id)
    assert (unchanged.status, len(unchanged.history)) == ("pending", 1)

    acknowledged = await act(as_receiver, "acknowledge")
    assert acknowledged.status == "acknowledged" and acknowledged.acknowledged_at is not None
    with pytest.raises(Problem) as again:
        await act(as_receiver, "acknowledge")
    assert again.value.status == 409 and again.value.extra == {"status_now": "acknowledged"}
    declined = await act(as_receiver, "decline", reason="no capacity")
    assert declined.status == "declined"
    sealer = stack.apps["referral"].state.sealer
    assert sealer.open("referrals", made.id, "decline_reason", declined.decline_reason) == "no capacity"
    assert [h["status"] for h in declined.history] == ["pending", "acknowledged", "declined"]
    changes = await published(stack, "referral.status_changed", referral_id=str(made.id))
    assert [(e["data"]["previous_status"], e["data"]["status"]) for e in changes] == [
        ("pending", "acknowledged"),
        ("acknowledged", "declined"),
    ]


async def test_minutes_are_recorded_once_with_known_cases_and_members_and_their_actions_completed_once(
    stack: Stack,
) -> None:
    m = new_municipality()
    member, foreign = await seed_member(stack, m, "health"), await seed_member(stack, new_municipality(), "health")
    case = await seed_case(stack, m)
    coordinator = principal("coordinator", m)
    async with session_of(stack) as session:
        meeting = await meetings.schedule_meeting(
            unit_of_work(stack, session, coordinator),
            MeetingIn(municipality=m, scheduled_for=datetime.now(UTC) - timedelta(hours=1), case_ids=[case.case_id]),
        )
    assert meeting.held

    def minutes(responsible: uuid.UUID) -> MinutesIn:
        due = datetime.now(UTC).date() + timedelta(days=7)
        decision = DecisionIn(
            case_id=case.case_id, action="a home visit", responsible_member_id=responsible, due_date=due
        )
        return MinutesIn(attended_member_ids=[member.id], decisions=[decision])

    async def record(responsible: uuid.UUID) -> tuple[EtnMeeting, list[PlanAction]]:
        async with session_of(stack) as session:
            command = meetings.RecordMinutes(meeting.id, minutes(responsible))
            return await meetings.record_minutes(unit_of_work(stack, session, coordinator), command)

    with pytest.raises(Problem) as unknown:
        await record(foreign.id)  # another municipality's member
    assert unknown.value.status == 422
    assert await _rows(stack, PlanAction, col(PlanAction.meeting_id) == meeting.id) == []
    recorded, actions = await record(member.id)
    assert recorded.minutes_recorded_at is not None and recorded.attended_member_ids == [str(member.id)]
    assert [(a.case_number, a.responsible_member_id) for a in actions] == [(case.case_number, member.id)]
    with pytest.raises(Problem) as twice:
        await record(member.id)
    assert twice.value.status == 409
    assert len(await _rows(stack, PlanAction, col(PlanAction.meeting_id) == meeting.id)) == 1

    async def complete(who: object) -> PlanAction:
        async with session_of(stack) as session:
            return await meetings.complete_plan_action(unit_of_work(stack, session, who), actions[0].id)  # type: ignore[arg-type]

    with pytest.raises(Problem) as not_theirs:
        await complete(principal("police", m, member_id=uuid.uuid4()))
    assert not_theirs.value.status == 404
    done = await complete(principal("health", m, member_id=member.id))
    assert done.status == "completed" and done.completed_at is not None
    with pytest.raises(Problem) as done_twice:
        await complete(coordinator)
    assert done_twice.value.status == 409


async def test_routing_rules_are_replaced_with_unique_names_only(stack: Stack) -> None:
    m = new_municipality()
    coordinator = principal("coordinator", m)
    rule = {"name": "everyone", "when": [{}], "refer_to": "social_services", "urgency": "normal"}
    async with session_of(stack) as session:
        with pytest.raises(Problem) as duplicate:
            body = RoutingRulesBody.model_validate({"rules": [rule, rule]})
            await directory.replace_routing_rules(unit_of_work(stack, session, coordinator), body)
        assert duplicate.value.status == 422
        assert (await routing.rules_for(session, m))[1] is True  # still the defaults
    async with session_of(stack) as session:
        body = RoutingRulesBody.model_validate({"rules": [rule]})
        await directory.replace_routing_rules(unit_of_work(stack, session, coordinator), body)
        rules, is_default = await routing.rules_for(session, m)
    assert not is_default and [r.name for r in rules] == ["everyone"]


async def test_routing_refers_escalates_a_pending_referral_and_announces_a_gap_once(stack: Stack) -> None:
    m = new_municipality()
    social = await seed_member(stack, m, "social_services")
    case = await seed_case(stack, m, needs=["legal_aid"], consent_share_with=["social_services", "legal_aid"])
    settings, config = stack.settings, stack.apps["referral"].state.referral_config

    async def route(risk_level: str) -> None:
        event = make_event(type_="case.risk_assessed", source="mkr/intake", subject=str(case.case_id),
                           municipality=m, data={"case_id": str(case.case_id)})  # fmt: skip
        async with session_of(stack) as session, session.begin():
            fact = await session.get(CaseFact, case.case_id, with_for_update=True)
            assert fact is not None
            fact.risk_level = risk_level
            await routing.route(session, settings, config, fact, event)

    await route("low")
    await route("high")
    (referral,) = await _rows(stack, Referral, col(Referral.case_id) == case.case_id)
    assert referral.to_member_id == social.id and referral.urgency == "emergency"
    decisions = await _rows(stack, RoutingDecision, col(RoutingDecision.case_id) == case.case_id)
    outcomes = sorted((d.kind, d.outcome) for d in decisions)
    assert ("social_services", "referred") in outcomes and ("social_services", "escalated") in outcomes
    assert outcomes.count(("legal_aid", "no_member")) == 2
    gaps = [e["data"]["missing_kind"] for e in await published(stack, "mechanism.gap", case_id=str(case.case_id))]
    assert gaps.count("legal_aid") == 1  # the second routing's gap was announced already
    assert len(gaps) == len(set(gaps))
