"""Possible duplicates and `q` search: accent- and typo-tolerant, over keyed trigrams in SQL."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from services.intake import search_index, service
from shared.auth import Principal, Role
from tests.intake.conftest import reported
from tests.support import Stack, contract_report, new_municipality

COORDINATOR = Principal(sub="coordinator-1", role=Role.coordinator, municipality="x")


def survivor(first: str, last: str, **extra: Any) -> dict[str, Any]:
    base = contract_report("x")["survivor"] | {"first_name": first, "last_name": last}
    return base | extra


async def test_same_person_with_accents_and_typos_is_a_possible_duplicate(intake: Stack) -> None:
    municipality = new_municipality()
    first = await reported(intake, municipality, survivor=survivor("Ermira", "Hoxha"))
    second = await reported(intake, municipality, survivor=survivor("Ermirë", "Hoxhë"))
    assert [d["id"] for d in second["possible_duplicates"]] == [first["id"]]
    match = second["possible_duplicates"][0]
    assert match["case_number"] == first["case_number"] and 0 < match["score"] <= 1


async def test_age_instead_of_birth_date_still_matches(intake: Stack) -> None:
    municipality = new_municipality()
    first = await reported(intake, municipality, survivor=survivor("Mirela", "Çela", date_of_birth="1990-01-15"))
    by_age = survivor("Mirela", "Cela")
    del by_age["date_of_birth"]
    second = await reported(intake, municipality, survivor=by_age | {"age": 2026 - 1990 - 1})
    assert [d["id"] for d in second["possible_duplicates"]] == [first["id"]]


async def test_different_people_are_not_duplicates(intake: Stack) -> None:
    municipality = new_municipality()
    await reported(intake, municipality, survivor=survivor("Ermira", "Hoxha"))
    other_name = await reported(intake, municipality, survivor=survivor("Drita", "Kola"))
    other_age = await reported(intake, municipality, survivor=survivor("Ermira", "Hoxha", date_of_birth="1960-01-01"))
    assert other_name["possible_duplicates"] == []
    assert other_age["possible_duplicates"] == []


async def test_duplicates_never_cross_municipalities(intake: Stack) -> None:
    await reported(intake, new_municipality(), survivor=survivor("Blerta", "Muça"))
    case = await reported(intake, new_municipality(), survivor=survivor("Blerta", "Muça"))
    assert case["possible_duplicates"] == []


async def test_search_matches_names_accent_and_typo_tolerant_and_case_numbers(intake: Stack) -> None:
    municipality = new_municipality()
    hoxha = await reported(intake, municipality, survivor=survivor("Ermira", "Hoxha"))
    kola = await reported(intake, municipality, survivor=survivor("Drita", "Kola"))
    coordinator = intake.auth("coordinator", municipality)

    async def search(q: str) -> list[str]:
        response = await intake.intake.get("/v1/cases", params={"q": q}, headers=coordinator)
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["items"]]

    assert await search("Hoxhë") == [hoxha["id"]]
    assert await search("ermire hoxha") == [hoxha["id"]]
    assert await search("KOLA") == [kola["id"]]
    assert await search(kola["case_number"]) == [kola["id"]]
    assert await search("Zyber") == []


async def test_list_filters_and_pages_with_a_cursor(intake: Stack) -> None:
    municipality = new_municipality()
    ids = [(await reported(intake, municipality))["id"] for _ in range(5)]
    high = await reported(intake, municipality, risk_answers={"threats_to_kill": True})
    coordinator = intake.auth("coordinator", municipality)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await intake.intake.get("/v1/cases", params=params, headers=coordinator)).json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [high["id"], *reversed(ids)]
    only_high = await intake.intake.get("/v1/cases", params={"risk_level": "high"}, headers=coordinator)
    assert [c["id"] for c in only_high.json()["items"]] == [high["id"]]
    for params in ({"cursor": "garbage"}, {"limit": 0}, {"limit": 10**9}, {"status": "lost"}):
        response = await intake.intake.get("/v1/cases", params=params, headers=coordinator)
        assert response.status_code == 422, params


async def test_duplicate_query_probes_the_gin_index_at_scale(intake: Stack) -> None:
    """With enough survivors for the planner to care, the service's own query probes the keyed-trigram index."""
    municipality = new_municipality()
    sessions = intake.apps["intake"].state.runtime.sessions
    async with sessions() as session, session.begin():
        await session.execute(
            sa.text(
                """
                INSERT INTO cases (id, municipality, case_number, status, risk_level, source, facts, personal,
                                   reported_at, reported_by_sub, reported_by_role, created_at)
                SELECT md5(:m || i)::uuid, :m, 'PLN-2025-' || i, 'open', 'low', 'police', '{}', 'k1:x',
                       now(), 'loader', 'police', now()
                FROM generate_series(1, 4000) AS i
                """
            ),
            {"m": municipality},
        )
        await session.execute(
            sa.text(
                """
                INSERT INTO survivor_index (case_id, municipality, name_keys, birth_year)
                SELECT md5(:m || i)::uuid, :m,
                       ARRAY(SELECT lpad(to_hex(i / 4 * 16 + j), 16, '0') FROM generate_series(1, 12) AS j),
                       1950 + i / 4 % 59
                FROM generate_series(1, 4000) AS i
                """
            ),
            {"m": municipality},
        )
        await service.count_survivor_keys(session)
    async with sessions() as session:
        await session.execute(sa.text("ANALYZE survivor_index"))
        # 4 000 rows is still small enough for a sequential scan to look cheap; the question is which index.
        await session.execute(sa.text("SET enable_seqscan = off"))
        # Groups of four survivors share a name; this one is group 100's (born 1991) with one key changed.
        keys = [f"{100 * 16 + j:016x}" for j in range(1, 12)] + [f"{99999:016x}"]
        params = {
            "keys": keys,
            "n": len(keys),
            "probe": await service.probe_keys(session, municipality, keys, 0.45),
            "m": municipality,
            "exclude": uuid.uuid4(),
            "by": 1990,
            "bdk": None,
            "threshold": 0.45,
            "limit": 5,
            "everything": True,
            "viewer_sub": "coordinator-1",
            "viewer_member": None,
        }

        async def plan(**changes: Any) -> str:
            result = await session.execute(sa.text("EXPLAIN " + service.DUPLICATES_SQL), params | changes)
            return "\n".join(row[0] for row in result)

        # Birth year known: the planner may narrow by name keys, by birth year (its own index) or both.
        with_year = await plan()
        # Birth year unknown: only the keyed-trigram index narrows, and it must be used.
        without_year = await plan(by=None)
        found = await service.possible_duplicates(session, **params_for_call(params))
    for text in (with_year, without_year):
        assert "Seq Scan on survivor_index" not in text, text
    assert "ix_survivor_index_name_codes" in without_year, without_year
    assert "ix_survivor_index_name_codes" in with_year or "ix_survivor_index_birth_year" in with_year, with_year
    assert found  # the data does hold similar names of that birth year, so the plan was asked real work


def params_for_call(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "viewer": COORDINATOR,
        "municipality": params["m"],
        "keys": params["keys"],
        "birth_year": params["by"],
        "birth_date_key": params["bdk"],
        "exclude": params["exclude"],
        "threshold": params["threshold"],
        "limit": params["limit"],
    }


def test_probe_size_is_the_pigeonhole_bound() -> None:
    # n keys, a match must share ceil(share * n) of them: probing n - that + 1 keys cannot miss it.
    # 0.56 * 275 is 154.00000000000003 in floating point: the bound must still read it as 154.
    table = [(13, 0.45, 8), (20, 0.45, 12), (10, 0.5, 6), (10, 1.0, 1), (1, 0.45, 1), (7, 0.01, 7), (275, 0.56, 122)]
    for n, share, probe in table:
        assert service.probe_size(n, share) == probe, (n, share)


async def test_rarest_key_probe_finds_exactly_what_comparing_every_name_finds(intake: Stack) -> None:
    """The index is probed with only some of a name's keys; whatever the census says, nothing is missed."""
    municipality = new_municipality()
    app = intake.apps["intake"]
    indexer = app.state.indexer
    sessions = app.state.runtime.sessions
    names = [
        ("Ermira", "Hoxha"), ("Ermirë", "Hoxhë"), ("Ermina", "Hoxha"), ("Mira", "Hoxha"), ("Ermira", "Hoxhaj"),
        ("Erjona", "Hoxha"), ("Ermira", "Kola"), ("Drita", "Hoxha"), ("Ermal", "Hoxholli"), ("Arta", "Kola"),
        ("Drita", "Kolla"), ("Dritë", "Kola"), ("Ana", "Leka"), ("Anila", "Leka"), ("Ana", "Lekaj"),
    ]
    ids: dict[str, tuple[str, str]] = {}
    for first, last in names:
        case = await reported(intake, municipality, survivor=survivor(first, last, date_of_birth="1990-03-04"))
        ids[case["id"]] = (first, last)
    keyed = {case_id: set(indexer.keyed(f"{f} {la}", municipality)) for case_id, (f, la) in ids.items()}

    async def found(query: set[str]) -> dict[str, float]:
        async with sessions() as session, session.begin():
            matches = await service.possible_duplicates(
                session, viewer=COORDINATOR, municipality=municipality, keys=sorted(query), birth_year=1990,
                birth_date_key=None, exclude=uuid.uuid4(), threshold=0.45, limit=100,
            )
        return {str(m.id): m.score for m in matches}

    def expected(query: set[str]) -> dict[str, float]:
        jaccard = {case_id: len(query & keys) / len(query | keys) for case_id, keys in keyed.items()}
        return {case_id: round(score, 3) for case_id, score in jaccard.items() if score >= 0.45}

    async def census(sql: str) -> None:
        async with sessions() as session, session.begin():
            await session.execute(sa.text(sql), {"m": municipality})

    queries = [set(indexer.keyed(f"{f} {la}", municipality)) for f, la in [*names[:8], ("Anë", "Leka")]]
    # No census yet, then the true census, then a census that calls the rarest keys the most common.
    for setting in (
        "DELETE FROM survivor_key_counts WHERE municipality = :m",
        None,
        "UPDATE survivor_key_counts SET survivors = 1000000 - survivors WHERE municipality = :m",
    ):
        if setting is None:
            async with sessions() as session, session.begin():
                assert municipality in await service.count_survivor_keys(session)
        else:
            await census(setting)
        for query in queries:
            assert await found(query) == expected(query), setting
    assert any(len(expected(q)) > 1 for q in queries)  # the names do overlap, so this compares something


async def test_key_census_counts_each_key_once_per_survivor_and_only_recounts_what_changed(intake: Stack) -> None:
    municipality = new_municipality()
    app = intake.apps["intake"]
    sessions = app.state.runtime.sessions
    keys = app.state.indexer.keyed("Lule Gashi", municipality)
    for _ in range(3):
        await reported(intake, municipality, survivor=survivor("Lule", "Gashi"))
    async with sessions() as session, session.begin():
        assert municipality in await service.count_survivor_keys(session)
    async with sessions() as session, session.begin():
        assert municipality not in await service.count_survivor_keys(session)  # nothing new
        counts = dict(
            (
                await session.execute(
                    sa.text("SELECT key, survivors FROM survivor_key_counts WHERE municipality = :m"),
                    {"m": municipality},
                )
            ).all()
        )
    # No exact count per key at rest: 3 survivors are stored as the bucket 4 (powers of two).
    assert counts == {key: service.census_bucket(3) for key in keys} == {key: 4 for key in keys}
    for _ in range(2):
        await reported(intake, municipality, survivor=survivor("Lule", "Gashi"))
    # Another replica counting holds the lock: this one skips rather than waits or counts twice.
    async with sessions() as holder, holder.begin():
        await holder.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('mkr.intake.key_census'))"))
        async with sessions() as session, session.begin():
            assert await service.count_survivor_keys(session) == []
    async with sessions() as session, session.begin():
        assert municipality in await service.count_survivor_keys(session)
        recount = await session.scalar(
            sa.text("SELECT survivors FROM survivor_key_counts WHERE municipality = :m AND key = :k"),
            {"m": municipality, "k": keys[0]},
        )
    assert recount == service.census_bucket(5) == 8


async def test_a_reports_one_statement_search_finds_what_the_two_searches_find(intake: Stack) -> None:
    """`report_duplicates` (one statement) answers as `possible_duplicates` with `everything` (the coordinator's
    candidates) and without (what the reporter may read), with a limit below the matches and some of the
    best matches hidden from the reporter."""
    municipality = new_municipality()
    app = intake.apps["intake"]
    names = [("Ermira", "Hoxha"), ("Ermirë", "Hoxhë"), ("Ermina", "Hoxha"), ("Ermira", "Hoxhaj"),
             ("Erjona", "Hoxha"), ("Mira", "Hoxha"), ("Ermira", "Hoxa")]  # fmt: skip
    reporters = ["police", "health", "police", "health", "health", "police", "police"]
    for (first, last), role in zip(names, reporters, strict=True):
        await reported(intake, municipality, role=role, member_id=f"m-{role}",
                       survivor=survivor(first, last, date_of_birth="1990-03-04"))  # fmt: skip
    police = Principal(sub="police-officer", role=Role.police, municipality=municipality, member_id="m-police")
    keys = app.state.indexer.keyed("Ermira Hoxha", municipality)
    for viewer in (police, COORDINATOR):
        async with app.state.runtime.sessions() as session, session.begin():
            call = {"municipality": municipality, "keys": keys, "birth_year": 1990, "birth_date_key": None,
                    "exclude": uuid.uuid4(), "threshold": 0.3, "limit": 3}  # fmt: skip
            everything = await service.possible_duplicates(session, viewer=viewer, everything=True, **call)
            visible = await service.possible_duplicates(session, viewer=viewer, **call)
            probe = await search_index.probe_keys(session, municipality, keys, 0.3)
            together = await search_index.report_duplicates(session, viewer=viewer, probe=probe, **call)
        assert together == (everything, visible)
        assert len(everything) == 3
        if viewer is police:
            # The reporter sees fewer than the coordinator among the best three (the case is worth checking).
            assert {m.id for m in everything} != {m.id for m in visible} and visible
