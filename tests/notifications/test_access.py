"""Notifications' access rules and commands without HTTP, on the session stack's real database: whose alerts a
caller sees (the SQL rule, its Python twin and the live stream's filter agree), acknowledging an alert, and
whose webhook subscriptions and deliveries a caller sees and removes. Each test uses a municipality of its own."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.notifications import access, commands
from services.notifications.delivery import Listener
from services.notifications.models import Alert, Delivery, Subscription
from services.notifications.schemas import SubscriptionIn
from shared.auth import Principal, Role
from shared.errors import Problem
from tests.support import Stack, new_municipality


@pytest.fixture
def state(stack: Stack) -> Any:
    return stack.apps["notifications"].state


async def run(state: Any, command: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
    """One command in a session and transaction of its own (a refusal rolls back only that one)."""
    async with state.runtime.sessions() as session, session.begin():
        return await command(session)


async def rows(state: Any, query: Any) -> list[Any]:
    async with state.runtime.sessions() as session, session.begin():
        return list((await session.execute(query)).scalars().all())


def alert(town: str, **addressee: str) -> Alert:
    return Alert(
        event_id=uuid.uuid4(), event_type="referral.created", type="referral_received", severity="info",
        municipality=town, recipient_key=":".join(f"{k}={v}" for k, v in addressee.items()), **addressee,
    )


def stream_of(principal: Principal) -> Listener:
    return Listener(principal.municipality, principal.role.value, principal.member_id, principal.shelter_id,
                    principal.sub)


async def test_whose_alerts_a_caller_sees_one_rule_in_sql_python_and_the_stream(state: Any) -> None:
    town, elsewhere = new_municipality(), new_municipality()
    shelter = str(uuid.uuid4())
    alerts = {
        "coordinators": alert(town, role="coordinator"),
        "police member": alert(town, member_id="m-police"),
        "shelter": alert(town, shelter_id=shelter),
        "one user": alert(town, sub="user-7"),
        "another town's coordinators": alert(elsewhere, role="coordinator"),
    }
    await run(state, lambda session: _add_all(session, list(alerts.values())))
    callers = {
        Principal(sub="c-1", role=Role.coordinator, municipality=town): {"coordinators"},
        Principal(sub="p-1", role=Role.police, municipality=town, member_id="m-police"): {"police member"},
        Principal(sub="p-2", role=Role.police, municipality=town, member_id="m-other"): set(),
        Principal(sub="s-1", role=Role.shelter_staff, municipality=town, shelter_id=shelter): {"shelter"},
        Principal(sub="user-7", role=Role.ngo, municipality=town): {"one user"},
        Principal(sub="user-7", role=Role.ngo, municipality=elsewhere): set(),
        Principal(sub="c-2", role=Role.coordinator, municipality=elsewhere): {"another town's coordinators"},
    }
    ids = [a.id for a in alerts.values()]
    for principal, expected in callers.items():
        query = sa.select(Alert).where(col(Alert.id).in_(ids), access.addressed_to(principal))
        in_sql = {a.id for a in await rows(state, query)}
        assert in_sql == {alerts[name].id for name in expected}, principal
        assert {n for n, a in alerts.items() if access.is_addressed_to(principal, a)} == expected, principal
        payloads = {
            n: {"m": a.municipality, "r": a.role, "mb": a.member_id, "s": a.shelter_id, "u": a.sub}
            for n, a in alerts.items()
        }
        assert {n for n, p in payloads.items() if stream_of(principal).concerns(p)} == expected, principal


async def _add_all(session: AsyncSession, new: list[Any]) -> None:
    session.add_all(new)
    await session.flush()


async def test_only_the_addressee_acknowledges_an_alert_and_the_first_read_stays(state: Any) -> None:
    town = new_municipality()
    raised = alert(town, member_id="m-legal")
    await run(state, lambda session: _add_all(session, [raised]))
    reader = Principal(sub="l-1", role=Role.legal_aid, municipality=town, member_id="m-legal")
    for stranger in (
        Principal(sub="l-2", role=Role.legal_aid, municipality=town, member_id="m-other"),
        Principal(sub="l-1", role=Role.legal_aid, municipality=new_municipality(), member_id="m-legal"),
    ):
        with pytest.raises(Problem) as hidden:
            await run(state, lambda session: commands.acknowledge(session, stranger, raised.id))  # noqa: B023
        assert hidden.value.status == 404
    [unread] = await rows(state, sa.select(Alert).where(col(Alert.id) == raised.id))
    assert unread.read_at is None
    first = await run(state, lambda session: commands.acknowledge(session, reader, raised.id))
    again = await run(state, lambda session: commands.acknowledge(session, reader, raised.id))
    assert first.read_at is not None and again.read_at == first.read_at


async def test_subscriptions_belong_to_their_owner_and_removal_cancels_pending_deliveries(state: Any) -> None:
    town = new_municipality()
    police = Principal(sub="p-1", role=Role.police, municipality=town, member_id="m-police")
    colleague = Principal(sub="p-2", role=Role.police, municipality=town, member_id="m-police")
    coordinator = Principal(sub="c-1", role=Role.coordinator, municipality=town)
    strangers = [
        Principal(sub="p-3", role=Role.police, municipality=town, member_id="m-other"),
        Principal(sub="p-1", role=Role.police, municipality=new_municipality(), member_id="m-police"),
        coordinator,  # the municipality's subscriptions are not the institution's
    ]
    body = SubscriptionIn(url="http://127.0.0.1:9/hook", event_types=["referral.created"])

    async def add(principal: Principal) -> Any:
        async with state.runtime.sessions() as session:  # opens its own transaction
            row, secret = await commands.add_subscription(
                session, state.settings, state.notifications_config, principal, body
            )
        assert secret
        return row

    with pytest.raises(Problem) as nameless:
        await add(Principal(sub="p-9", role=Role.police, municipality=town))  # an institution without member_id
    assert nameless.value.status == 403
    mine, theirs = await add(police), await add(coordinator)
    pending = Delivery(dedupe_key=f"webhook:{mine.id}:x", channel="webhook", subscription_id=mine.id,
                       event_id=uuid.uuid4(), event_type="referral.created", municipality=town, payload="{}")
    await run(state, lambda session: _add_all(session, [pending]))

    def owned(principal: Principal) -> Awaitable[list[Any]]:
        return rows(state, sa.select(col(Delivery.id)).where(access.visible_deliveries(principal)))

    assert await owned(police) == await owned(colleague) == [pending.id]  # the institution's, whoever asks
    assert await owned(coordinator) == []
    assert access.owns_subscription(colleague, mine) and not access.owns_subscription(coordinator, mine)
    assert access.owns_subscription(coordinator, theirs) and not access.owns_subscription(police, theirs)
    for stranger in strangers:
        with pytest.raises(Problem) as hidden:
            await run(state, lambda session: commands.remove_subscription(session, stranger, mine.id))  # noqa: B023
        assert hidden.value.status == 404
    [still] = await rows(state, sa.select(Delivery).where(col(Delivery.id) == pending.id))
    assert still.state == "pending"
    await run(state, lambda session: commands.remove_subscription(session, colleague, mine.id))
    [cancelled] = await rows(state, sa.select(Delivery).where(col(Delivery.id) == pending.id))
    assert cancelled.state == "cancelled"
    assert await owned(police) == []
    with pytest.raises(Problem) as gone:
        await run(state, lambda session: commands.remove_subscription(session, police, mine.id))
    assert gone.value.status == 404


def test_which_subscriptions_receive_an_event() -> None:
    institution = Subscription(municipality="elbasan", owner_role="police", owner_member_id="m-police",
                               owner_sub="p", url="https://example.org/h", event_types=["referral.created"], secret="")
    municipal = Subscription(municipality="elbasan", owner_role="coordinator", owner_member_id=None,
                             owner_sub="c", url="https://example.org/h", event_types=["referral.created"], secret="")
    to_police = {"to_member_id": "m-police"}
    to_shelter = {"to_member_id": "m-shelter"}
    assert access.receives(institution, "referral.created", to_police)
    assert not access.receives(institution, "referral.created", to_shelter)
    assert access.receives(municipal, "referral.created", to_shelter)
    own_failure = {"subscription_id": str(municipal.id)}
    assert not access.receives(municipal, "notification.failed", own_failure)
    assert access.receives(municipal, "notification.failed", {"subscription_id": str(uuid.uuid4())})
