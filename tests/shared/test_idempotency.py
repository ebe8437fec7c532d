"""The one idempotent-POST helper (shared/idempotency.py) directly, on a real database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.errors import Problem
from shared.idempotency import IdempotentRequest, metadata
from shared.settings import Settings
from tests.support import throwaway_event_database


class Body(BaseModel):
    beds: int


@pytest.fixture
async def sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    async with throwaway_event_database(settings, "idem", metadata) as engine:
        yield async_sessionmaker(engine, expire_on_commit=False)


async def _post(sessions: async_sessionmaker[AsyncSession], once: IdempotentRequest, runs: list[int]) -> object:
    """What a route does: claim, work, remember in one transaction; else replay."""
    async with sessions() as session:
        async with session.begin():
            if await once.claim(session):
                runs.append(1)
                answer = {"id": len(runs)}
                await once.remember(session, 201, answer)
                return answer
        response = await once.replay(session)
        return bytes(response.body)


async def test_a_retry_gets_the_first_answer_and_the_work_runs_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    runs: list[int] = []
    once = IdempotentRequest.of(scope="elbasan", caller="sub-1", key="k-1", body=Body(beds=2))
    assert await _post(sessions, once, runs) == {"id": 1}
    assert await _post(sessions, once, runs) == b'{"id":1}'
    assert runs == [1]
    # Another caller, scope or key is another request.
    for other in (
        IdempotentRequest.of(scope="elbasan", caller="sub-2", key="k-1", body=Body(beds=2)),
        IdempotentRequest.of(scope="elbasan:rent-bonus", caller="sub-1", key="k-1", body=Body(beds=2)),
        IdempotentRequest.of(scope="elbasan", caller="sub-1", key="k-2", body=Body(beds=2)),
    ):
        assert await _post(sessions, other, runs) == {"id": len(runs)}
    assert len(runs) == 4


async def test_the_same_key_with_another_body_is_409(sessions: async_sessionmaker[AsyncSession]) -> None:
    runs: list[int] = []
    await _post(sessions, IdempotentRequest.of(scope="s", caller="c", key="k", body=Body(beds=1)), runs)
    with pytest.raises(Problem) as refused:
        await _post(sessions, IdempotentRequest.of(scope="s", caller="c", key="k", body=Body(beds=3)), runs)
    assert refused.value.status == 409 and runs == [1]


async def test_a_failed_first_call_leaves_no_claim(sessions: async_sessionmaker[AsyncSession]) -> None:
    once = IdempotentRequest.of(scope="s", caller="c", key="k", body=Body(beds=1))
    with pytest.raises(RuntimeError):
        async with sessions() as session, session.begin():
            assert await once.claim(session)
            raise RuntimeError("the change failed")
    runs: list[int] = []
    assert await _post(sessions, once, runs) == {"id": 1}


async def test_without_a_key_every_call_runs(sessions: async_sessionmaker[AsyncSession]) -> None:
    runs: list[int] = []
    once = IdempotentRequest.of(scope="s", caller="c", key=None, body=Body(beds=1))
    assert [await _post(sessions, once, runs) for _ in range(3)] == [{"id": 1}, {"id": 2}, {"id": 3}]
