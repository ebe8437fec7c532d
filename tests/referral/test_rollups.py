"""The summary's rollups (services/referral/rollups.py) give exactly what counting every row gives, for
whole months and the days around them, after inserts, updates, moves and deletes of the rows."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.referral import reports, rollups
from shared import db
from tests.support import Stack, new_municipality

PERIODS = [
    (date(2018, 1, 1), date(2018, 12, 31)),  # whole months only
    (date(2018, 1, 15), date(2018, 3, 10)),  # edges around one whole month
    (date(2018, 2, 3), date(2018, 2, 20)),  # inside one month: rows only
    (date(2018, 5, 31), date(2018, 6, 30)),  # one day before a whole month
]


def test_a_period_splits_into_whole_months_and_edges() -> None:
    period = rollups.split(date(2018, 1, 15), date(2018, 3, 10))
    assert period.months == [date(2018, 2, 1)]
    assert period.edges == [
        (datetime(2018, 1, 15, tzinfo=UTC), datetime(2018, 2, 1, tzinfo=UTC)),
        (datetime(2018, 3, 1, tzinfo=UTC), datetime(2018, 3, 11, tzinfo=UTC)),
    ]
    assert rollups.split(date(2018, 12, 1), date(2018, 12, 31)).months == [date(2018, 12, 1)]
    assert rollups.split(date(2018, 12, 1), date(2018, 12, 31)).edges == []
    assert rollups.split(date(2018, 12, 2), date(2018, 12, 31)).months == []


async def _seed(engine: AsyncEngine, municipality: str, count: int, rng: random.Random) -> None:
    start = datetime(2018, 1, 1, tzinfo=UTC)
    facts, referrals = [], []
    for i in range(count):
        at = start + timedelta(minutes=rng.randint(0, 365 * 24 * 60 - 1))
        case_id = uuid.uuid4()
        facts.append({
            "case_id": case_id, "case_number": f"RLP-{i}", "municipality": municipality,
            "reported_municipality": municipality, "reported_at": at,
            "status": rng.choice(["open", "closed"]), "risk_level": rng.choice(["low", "medium", "high"]),
            "source": rng.choice(["police", None]), "sex": rng.choice(["female", "male", None]),
            "age_group": rng.choice(["25-39", "60+", None]), "ethnicity": rng.choice(["roma", "egyptian", None]),
            "violence_types": json.dumps(rng.sample(["physical", "sexual", "economic"], rng.randint(0, 2))),
            "needs": "[]", "consent_share_with": "[]", "children_count": rng.choice([0, 2]),
            "repeat": rng.random() < 0.3, "pending_duplicates": 0,
        })  # fmt: skip
        acknowledged = at + timedelta(seconds=rng.randint(30, 90_000)) if rng.random() < 0.8 else None
        referrals.append({
            "id": uuid.uuid4(), "case_id": case_id, "case_number": f"RLP-{i}", "municipality": municipality,
            "to_member_id": uuid.uuid4(), "to_member_kind": rng.choice(["police", "health"]), "urgency": "normal",
            "status": rng.choice(["pending", "acknowledged", "declined"]), "reason": "r", "origin": "auto",
            "sender_role": "coordinator", "created_by": "test", "created_at": at, "updated_at": at,
            "ack_due_at": at + timedelta(days=3), "acknowledged_at": acknowledged,
            "sla_breached_at": at if rng.random() < 0.2 else None, "history": "[]",
        })  # fmt: skip
    columns = ", ".join(facts[0])
    values = ", ".join(f"CAST(:{k} AS jsonb)" if k in ("violence_types", "needs", "consent_share_with") else f":{k}"
                       for k in facts[0])
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"INSERT INTO case_facts ({columns}) VALUES ({values})"), facts)
        columns = ", ".join(referrals[0])
        values = ", ".join(f"CAST(:{k} AS jsonb)" if k == "history" else f":{k}" for k in referrals[0])
        await conn.execute(sa.text(f"INSERT INTO referrals ({columns}) VALUES ({values})"), referrals)


async def _both(engine: AsyncEngine, municipality: str, start: date, end: date) -> tuple[Any, Any]:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session:
        rolled = await reports.summary(session, municipality, start, end)
        counted = await reports.summary(session, municipality, start, end, use_rollups=False)
        # The median as PostgreSQL's percentile_cont computes it over the rows.
        scoped = lambda statement: reports._scoped(statement, municipality)  # noqa: E731
        period = rollups.split(start, end, rollups=False)
        reference = await rollups._median_from_rows(session, scoped, period, {"m": municipality})
    expected = round(reference, 2) if reference is not None else None
    assert rolled.referrals["median_hours_to_acknowledge"] == expected, (municipality, start, end)
    return rolled.model_dump(), counted.model_dump()


async def _assert_same(engine: AsyncEngine, *municipalities: str) -> None:
    for municipality in (*municipalities, reports.NATIONAL):
        for start, end in PERIODS:
            rolled, counted = await _both(engine, municipality, start, end)
            assert rolled == counted, (municipality, start, end)


async def test_rollups_equal_counting_every_row_through_inserts_updates_moves_and_deletes(stack: Stack) -> None:
    engine = db.create_engine(stack.settings, "referral")
    rng = random.Random(15)
    m, other = new_municipality(), new_municipality()
    try:
        await _seed(engine, m, 300, rng)
        await _seed(engine, other, 40, rng)
        await _assert_same(engine, m, other)
        rolled, _ = await _both(engine, m, date(2018, 1, 1), date(2018, 12, 31))
        assert rolled["cases"]["total"] == 300 and rolled["referrals"]["total"] == 300
        assert rolled["cases"]["repeat"] > 0 and rolled["referrals"]["median_hours_to_acknowledge"] is not None
        async with engine.begin() as conn:
            p = {"m": m, "o": other}
            await conn.execute(sa.text("UPDATE case_facts SET status = 'closed', repeat = NOT repeat "
                                       "WHERE municipality = :m AND risk_level = 'low'"), p)
            await conn.execute(sa.text("UPDATE case_facts SET reported_at = reported_at + interval '20 days' "
                                       "WHERE municipality = :m AND risk_level = 'medium'"), p)
            # A transfer: the case moves, its reporting municipality keeps counting it (transferred_out).
            await conn.execute(sa.text("UPDATE case_facts SET municipality = :o "
                                       "WHERE municipality = :m AND risk_level = 'high' AND sex = 'male'"), p)
            await conn.execute(sa.text("DELETE FROM case_facts WHERE municipality = :m AND sex IS NULL"), p)
            await conn.execute(sa.text("UPDATE referrals SET status = 'completed', sla_breached_at = NULL, "
                                       "acknowledged_at = created_at + interval '61 seconds' "
                                       "WHERE municipality = :m AND to_member_kind = 'police'"), p)
            await conn.execute(sa.text("DELETE FROM referrals WHERE municipality = :m AND status = 'declined'"), p)
        await _assert_same(engine, m, other)
        moved, _ = await _both(engine, m, date(2018, 1, 1), date(2018, 12, 31))
        assert moved["cases"]["transferred_out"] > 0
    finally:
        await engine.dispose()


async def test_the_median_is_exact_for_an_even_and_an_odd_count(stack: Stack) -> None:
    engine = db.create_engine(stack.settings, "referral")
    try:
        for count in (7, 8):
            m = new_municipality()
            await _seed(engine, m, count, random.Random(count))
            for start, end in PERIODS:
                rolled, counted = await _both(engine, m, start, end)
                assert rolled["referrals"] == counted["referrals"]
    finally:
        await engine.dispose()
