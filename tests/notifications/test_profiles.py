"""Country profiles (CONTRACT §10): the notifications service started as `kosovo`, with its consumer on the real
broker, speaks Serbian (Latin) on `Accept-Language: sr`; an unknown MKR_PROFILE stops a service at start."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from services.notifications import domain
from shared import profiles
from shared.events import ensure_topics
from shared.settings import Settings
from tests.conftest import drop_databases
from tests.notifications.conftest import Produce, producer_for_settings
from tests.support import Stack, new_municipality, running_stack, wait_for


@pytest.fixture(scope="module")
async def kosovo(settings: Settings, kafka_producer: AIOKafkaProducer) -> AsyncIterator[tuple[Stack, Produce]]:
    run = uuid.uuid4().hex[:6]
    private = settings.model_copy(
        update={"profile": "kosovo", "database_prefix": f"mkrk_{run}_", "kafka_topic_prefix": f"k{run}."}
    )
    await ensure_topics(private)
    try:
        async with running_stack(private, ("notifications",)) as stack:
            yield stack, producer_for_settings(kafka_producer, private)
    finally:
        await drop_databases(private)


async def test_kosovo_alerts_read_in_serbian_albanian_and_english(kosovo: tuple[Stack, Produce]) -> None:
    stack, produce = kosovo
    town = new_municipality()
    case_id = str(uuid.uuid4())
    await produce("intake", "case.reported", town, {"case_id": case_id, "case_number": "PR-2026-00007",
                                                     "risk_level": "high"})  # fmt: skip
    coordinator = stack.auth("coordinator", town)

    async def inbox(language: str | None) -> tuple[dict[str, Any], str] | None:
        headers = coordinator | ({"Accept-Language": language} if language else {})
        response = await stack.notifications.get("/v1/inbox", headers=headers)
        assert response.status_code == 200, response.text
        found = [a for a in response.json()["items"] if a["type"] == "case.high_risk" and a["case_id"] == case_id]
        return (found[0], response.headers["Content-Language"]) if found else None

    serbian, language = await wait_for(lambda: inbox("sr"), timeout=30, what="the high-risk alert")
    assert language == "sr"
    assert serbian["title"] == "Slučaj visokog rizika PR-2026-00007"
    assert serbian["body"] == "Slučaj PR-2026-00007 je visokog rizika. Potrebno je hitno delovanje."
    albanian, language = await inbox(None) or ({}, "")
    assert language == "sq" and albanian["title"] == "Rast me rrezik të lartë PR-2026-00007"  # Kosovo's first
    english, language = await inbox("sr;q=0.5, en") or ({}, "")
    assert language == "en" and english["title"] == "High-risk case PR-2026-00007"


def test_each_profile_holds_together_and_albania_is_the_default() -> None:
    assert Settings().profile == "albania"
    for name in profiles.PROFILES:
        profile = profiles.load(name)
        for language in profile.languages:  # every alert type has a text in every language offered
            assert set(profile.texts[language].alerts) == set(profiles.load("albania").texts["sq"].alerts)
    montenegro = profiles.load("montenegro")
    assert montenegro.language == "sr" and montenegro.timezone == "Europe/Podgorica"
    assert domain.language_of(None, montenegro) == "sr"
    assert domain.language_of("sq", montenegro) == "sr"  # not offered there
    title, body = domain.render(
        "protection_order.expiring", {"case_number": "PG-1", "kind": "immediate", "expires_at": "2027-01-01"},
        "sr", montenegro,
    )  # fmt: skip
    assert "hitna mjera zaštite" in body and title == "Zaštitna mera ističe: PG-1"
    # Albania, without a profile named: the texts of before.
    assert domain.render("rent_bonus.payment_due", {"case_number": "E-1", "month": "2026-01", "amount": "5000"},
                         "sq")[1].endswith("(5000 lekë) duhet kryer.")  # fmt: skip


def test_an_unknown_profile_stops_a_service_at_start_with_a_clear_message() -> None:
    env = {**os.environ, "MKR_PROFILE": "france"}
    done = subprocess.run(
        [sys.executable, "-m", "mkr.cli", "serve", "--service", "notifications", "--port", "1"],
        capture_output=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode != 0
    assert "MKR_PROFILE='france' is not a profile: choose one of albania, kosovo, montenegro" in done.stderr.decode()
