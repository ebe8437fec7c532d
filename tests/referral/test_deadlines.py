"""The deadline scheduler: a missed acknowledgement or an overdue plan action is raised exactly once,
with two replicas running and across a restart (a private stack with short deadlines)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from services.referral.config import ReferralConfig
from shared import db
from shared.events import ensure_topics, producer_for
from shared.settings import Settings
from tests.referral.helpers import add_member, produce, published, referrals_of, reported, routing_of
from tests.support import new_municipality, running_stack, wait_for

SHORT = ReferralConfig(ack_emergency_seconds=0.3, ack_high_seconds=3600, ack_normal_seconds=3600, scan_seconds=0.2)


@pytest.fixture
async def private(settings: Settings) -> AsyncIterator[Settings]:
    run = uuid.uuid4().hex[:8]
    own = settings.model_copy(update={"database_prefix": f"mkrt_{run}_", "kafka_topic_prefix": f"p{run}."})
    await ensure_topics(own)
    yield own
    await db.drop_database(own, "referral")


async def test_missed_acknowledgement_and_overdue_action_are_raised_once_by_two_replicas_and_after_restart(
    private: Settings,
) -> None:
    m = new_municipality()
    options = {"referral": {"config": SHORT}}
    producer = producer_for(private)
    await asyncio.wait_for(producer.start(), timeout=15)
    try:
        async with (
            running_stack(private, ("referral",), options) as one,
            running_stack(private, ("referral",), options) as two,
        ):
            ss = await add_member(one, m, "social_services")
            await add_member(one, m, "legal_aid")
            urgent = reported(
                m, risk_level="high", needs=["legal_aid"], consent_share_with=["social_services", "legal_aid"]
            )
            await produce(producer, private, "case.reported", m, urgent)
            found = await referrals_of(one, m, urgent["case_id"], 2, timeout=30)
            emergency = next(r for r in found if r["urgency"] == "emergency")
            not_due = next(r for r in found if r["urgency"] != "emergency")
            assert emergency["to_member_id"] == ss["id"]

            async def breached() -> list[object]:
                return await published(one, "referral.sla_breached", referral_id=emergency["id"])

            await wait_for(breached, timeout=10, what="referral.sla_breached")
            # A plan action already past due, recorded in minutes of a meeting held yesterday.
            coordinator = one.auth("coordinator", m)
            await routing_of(one, m, urgent["case_id"])
            meeting = await two.referral.post(
                "/v1/etn-meetings",
                json={
                    "municipality": m,
                    "scheduled_for": (datetime.now(UTC) - timedelta(days=3)).isoformat(),
                    "case_ids": [urgent["case_id"]],
                    "member_ids": [ss["id"]],
                },
                headers=coordinator,
            )
            assert meeting.status_code == 201, meeting.text
            yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
            minutes = await two.referral.post(
                f"/v1/etn-meetings/{meeting.json()['id']}/minutes",
                json={
                    "attended_member_ids": [ss["id"]],
                    "decisions": [
                        {
                            "case_id": urgent["case_id"],
                            "action": "home visit",
                            "responsible_member_id": ss["id"],
                            "due_date": yesterday,
                        }
                    ],
                },
                headers=coordinator,
            )
            assert minutes.status_code == 201, minutes.text
            action_id = minutes.json()["actions"][0]["id"]

            async def overdue() -> list[object]:
                return await published(one, "plan.action_overdue", action_id=action_id)

            await wait_for(overdue, timeout=10, what="plan.action_overdue")
            await asyncio.sleep(1.0)  # several scans of both replicas
            assert len(await breached()) == 1
            assert len(await overdue()) == 1
            assert await published(one, "referral.sla_breached", referral_id=not_due["id"]) == []
            dashboard = await one.referral.get("/v1/dashboard", headers=coordinator)
            assert dashboard.json()["overdue_referrals"]["count"] == 1
            assert dashboard.json()["overdue_plan_actions"]["items"][0]["action_id"] == action_id
        async with running_stack(private, ("referral",), options) as again:
            await asyncio.sleep(1.0)
            assert len(await published(again, "referral.sla_breached", referral_id=emergency["id"])) == 1
            assert len(await published(again, "plan.action_overdue", action_id=action_id)) == 1
            event = (await published(again, "referral.sla_breached", referral_id=emergency["id"]))[0]
            assert event["data"]["urgency"] == "emergency" and event["data"]["case_number"] == urgent["case_number"]
            shown = await again.referral.get(f"/v1/referrals/{emergency['id']}", headers=again.auth("coordinator", m))
            assert shown.json()["sla_breached_at"] is not None
    finally:
        await asyncio.wait_for(producer.stop(), timeout=10)
