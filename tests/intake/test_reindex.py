"""`mkr reindex` (issue #17): intake's blind index moves from one MKR_INDEX_KEY to another while intake
serves. With `MKR_INDEX_KEY=NEW, MKR_INDEX_KEY_PREVIOUS=OLD`, search and the duplicate check find every
survivor before, during (batches of one, a report and a correction in between, an interrupted run) and
after the reindex; then intake runs on NEW alone and still finds everyone; an erased case stays out."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from mkr.reindex import reindex, status
from services.intake import service
from shared import db
from shared.auth import Principal, Role
from shared.crypto import SearchIndexer
from shared.settings import Settings
from tests.support import Stack, contract_report, new_municipality, running_stack

NAMES = [("Rina", "Dukagjini"), ("Vjosa", "Kastrioti"), ("Lume", "Frasheri"), ("Drita", "Mjedaj"),
         ("Besa", "Naimaj"), ("Zana", "Bogdani")]


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


class Interrupted(Exception):
    """The operator's Ctrl-C, between two batches."""


async def _report(stack: Stack, m: str, first: str, last: str) -> dict[str, Any]:
    body = contract_report(m)
    body["survivor"].update(first_name=first, last_name=last, date_of_birth="1988-07-01")
    response = await stack.intake.post("/v1/cases", json=body, headers=stack.auth("coordinator", m))
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _search(stack: Stack, m: str, name: str) -> list[str]:
    found = await stack.intake.get("/v1/cases", params={"q": name, "limit": 100}, headers=stack.auth("coordinator", m))
    assert found.status_code == 200, found.text
    ids = [item["id"] for item in found.json()["items"]]
    assert len(ids) == len(set(ids)), ids  # one result per case, whichever key found it
    return ids


async def _everyone_found(stack: Stack, m: str, people: dict[str, tuple[str, str]]) -> None:
    """Each survivor by name search, and as the possible duplicate of a new report of the same person."""
    for case_id, (first, last) in people.items():
        assert case_id in await _search(stack, m, f"{first} {last}"), (first, last)
        twin = await _report(stack, m, first, last)
        duplicates = [d["id"] for d in twin["possible_duplicates"]]
        assert case_id in duplicates and len(duplicates) == len(set(duplicates)), (first, last, duplicates)


async def _key_ids(stack: Stack, m: str) -> dict[str | None, int]:
    async with stack.apps["intake"].state.runtime.sessions() as session:
        rows = await session.execute(
            sa.text("SELECT key_id, count(*) FROM survivor_index WHERE municipality = :m GROUP BY key_id"), {"m": m}
        )
        return {key_id: count for key_id, count in rows.all()}


async def _census(stack: Stack, m: str) -> dict[str, int]:
    async with stack.apps["intake"].state.runtime.sessions() as session, session.begin():
        await service.count_survivor_keys(session)
        rows = await session.execute(
            sa.text("SELECT key_id, survivors FROM survivor_key_census WHERE municipality = :m"), {"m": m}
        )
        return {key_id: survivors for key_id, survivors in rows.all()}


async def _mkr(settings: Settings, *args: str) -> str:
    env = {"PATH": os.environ.get("PATH", ""), "MKR_ENVIRONMENT": "test", "MKR_STATE_DIR": str(settings.state_dir),
           "MKR_DATABASE_URL": str(settings.database_url), "MKR_DATABASE_PREFIX": settings.database_prefix,
           "MKR_INDEX_KEY": settings.index_key or "", "MKR_INDEX_KEY_PREVIOUS": settings.index_key_previous or ""}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mkr.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, out.decode()
    return out.decode()


@pytest.mark.timeout(300)
async def test_reindex_moves_the_blind_index_to_a_new_key_while_intake_serves(settings: Settings) -> None:
    old, new = _key(), _key()
    run = uuid.uuid4().hex[:4]
    base = settings.model_copy(update={"database_prefix": f"{settings.database_prefix}rx{run}_",
                                       "kafka_topic_prefix": f"{settings.kafka_topic_prefix}rx{run}.",
                                       "index_key": old})
    old_id = SearchIndexer.from_settings(base).key_id
    m = new_municipality()
    people: dict[str, tuple[str, str]] = {}
    async with running_stack(base, ("intake",)) as stack:
        for first, last in NAMES:
            people[(await _report(stack, m, first, last))["id"]] = (first, last)
        erased_id = (await _report(stack, m, "Teuta", "Erasedaj"))["id"]
        erased = await stack.intake.post(f"/v1/cases/{erased_id}/erase", json={"reason": "asked"},
                                         headers=stack.auth("coordinator", m))
        assert erased.status_code == 200
        async with stack.apps["intake"].state.runtime.sessions() as session, session.begin():
            # A row of before key ids, and an erased case's row an older release left behind.
            await session.execute(sa.text("UPDATE survivor_index SET key_id = NULL WHERE case_id = :id"),
                                  {"id": next(iter(people))})
            await session.execute(sa.text(
                "INSERT INTO survivor_index (case_id, municipality, name_keys, key_id) VALUES (:id, :m, :keys, :kid)"
            ), {"id": erased_id, "m": m, "keys": stack.apps["intake"].state.indexer.keyed("Teuta Erasedaj", m),
                "kid": old_id})
        assert await _key_ids(stack, m) == {None: 1, old_id: len(NAMES) - 1 + 1}

    rotated = base.model_copy(update={"index_key": new, "index_key_previous": old})
    new_id = SearchIndexer.from_settings(rotated).key_id
    assert new_id != old_id and old not in new_id
    async with running_stack(rotated, ("intake",)) as stack:
        await _everyone_found(stack, m, people)  # before any row moved: the twins are under NEW, the rest OLD
        twins = len(people)
        # Interrupted after two rows (batches of one): the rows done stay done.
        seen: list[tuple[int, int]] = []

        def interrupt(done: int, total: int) -> None:
            seen.append((done, total))
            if done == 2:
                raise Interrupted

        with pytest.raises(Interrupted):
            await reindex(rotated, batch=1, progress=interrupt)
        assert seen == [(1, len(NAMES) + 1), (2, len(NAMES) + 1)]
        state = await status(rotated)
        assert (state["key_id"], state["previous_key_id"]) == (new_id, old_id)
        assert state["remaining"] == len(NAMES) + 1 - 2 and state["done"] >= twins + 1  # +1: the erased row dropped
        census = await _census(stack, m)  # each key counted apart, together every survivor once
        assert set(census) <= {"", old_id, new_id} and new_id in census
        assert sum(census.values()) == state["done"] + state["remaining"]

        # The rest, one row per run, with a report and a correction between batches.
        corrected = next(iter(people))
        async with stack.apps["intake"].state.runtime.sessions() as session:
            pending = await session.scalar(sa.text("SELECT key_id IS DISTINCT FROM :kid FROM survivor_index "
                                                   "WHERE case_id = :id"), {"id": corrected, "kid": new_id})
        patched = await stack.intake.patch(f"/v1/cases/{corrected}/survivor", json={"last_name": "Gjergjaj"},
                                           headers=stack.auth("coordinator", m))
        assert patched.status_code == 200, patched.text
        people[corrected] = (people[corrected][0], "Gjergjaj")
        fresh = await _report(stack, m, "Mimoza", "Rexhepaj")
        people[fresh["id"]] = ("Mimoza", "Rexhepaj")
        runs = 0
        while True:
            done = await reindex(rotated, batch=1, limit=1)
            assert done["rewritten"] + done["dropped"] == 1
            runs += 1
            for case_id, (first, last) in people.items():
                assert case_id in await _search(stack, m, f"{first} {last}"), (first, last)
            if not done["remaining"]:
                break
        twins_before = twins + 1  # the fresh report
        await _everyone_found(stack, m, people)
        assert erased_id not in await _search(stack, m, "Teuta Erasedaj")
        # Every row once: the corrected one (if still to do) was put under NEW by the correction, the fresh
        # report was written under NEW; neither was taken by a batch.
        assert runs == len(NAMES) + 1 - 2 - (1 if pending else 0)
        assert await reindex(rotated) == {"rewritten": 0, "dropped": 0, "remaining": 0}
        assert (await status(rotated))["remaining"] == 0
        assert await _key_ids(stack, m) == {new_id: len(NAMES) + twins_before + len(people)}
        for args in (["--status"], ["--batch", "7"]):  # the command itself, as the operator runs it
            said = await _mkr(rotated, "reindex", *args)
            assert f"key id {new_id}" in said and "Remove MKR_INDEX_KEY_PREVIOUS" in said, said

    only_new = base.model_copy(update={"index_key": new})
    async with running_stack(only_new, ("intake",)) as stack:
        await _everyone_found(stack, m, people)
        assert erased_id not in await _search(stack, m, "Teuta Erasedaj")
        async with stack.apps["intake"].state.runtime.sessions() as session:
            assert await session.scalar(sa.text("SELECT count(*) FROM survivor_index WHERE case_id = :id"),
                                        {"id": erased_id}) == 0
        assert set(await _census(stack, m)) == {new_id}  # the old key's census is gone with its rows
    await db.drop_database(base, "intake")


async def test_a_row_moved_to_the_new_key_between_the_two_probes_is_still_a_duplicate(intake: Stack) -> None:
    """The duplicate check under two keys is two statements. A row `mkr reindex` commits onto the new key
    right after the first one is still found: the previous key is probed first, the current key last."""
    m = new_municipality()
    app = intake.apps["intake"]
    old: SearchIndexer = app.state.indexer
    both = SearchIndexer(os.urandom(32), previous=old)
    case_id = (await _report(intake, m, "Arbena", "Zhupaj"))["id"]
    engine = app.state.runtime.engine.sync_engine
    moved: list[str] = []

    def move_after_first_probe(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "FROM top t JOIN cases c" in statement and not moved:
            moved.append(statement)
            with engine.begin() as other:  # another connection, committed: what a reindex batch does
                other.execute(sa.text(
                    "UPDATE survivor_index SET name_keys = :keys, birth_date_key = NULL, key_id = :kid "
                    "WHERE case_id = :id"
                ), {"keys": both.keyed("Arbena Zhupaj", m), "kid": both.key_id, "id": case_id})

    sa.event.listen(engine, "after_cursor_execute", move_after_first_probe)
    try:
        async with app.state.runtime.sessions() as session, session.begin():
            under = service.probes(both, "Arbena Zhupaj", m, None)
            found = await service.possible_duplicates(
                session, viewer=Principal(sub="coordinator-1", role=Role.coordinator, municipality=m),
                municipality=m, keys=under[0].keys, birth_year=None, birth_date_key=None,
                exclude=uuid.uuid4(), threshold=0.45, limit=5, under=under,
            )
    finally:
        sa.event.remove(engine, "after_cursor_execute", move_after_first_probe)
    assert moved, "the duplicate statement ran"
    assert [str(match.id) for match in found] == [case_id]
    assert await _key_ids(intake, m) == {both.key_id: 1}  # it did move between the two statements
