"""Possible duplicates and `q` search: accent- and typo-tolerant, over keyed trigrams in SQL."""

from __future__ import annotations

from typing import Any

from tests.intake.conftest import reported
from tests.support import Stack, contract_report, new_municipality


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


async def test_duplicate_query_uses_the_gin_index(intake: Stack) -> None:
    import sqlalchemy as sa

    from shared import db

    engine = db.create_engine(intake.settings, "intake")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SET enable_seqscan = off"))
            plan = "\n".join(
                row[0]
                for row in await conn.execute(
                    sa.text(
                        "EXPLAIN SELECT case_id FROM survivor_index WHERE municipality = 'x' "
                        "AND name_keys && ARRAY['a','b']::text[]"
                    )
                )
            )
    finally:
        await engine.dispose()
    assert "ix_survivor_index_name_keys" in plan
