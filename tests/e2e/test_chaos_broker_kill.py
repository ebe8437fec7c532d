"""`make chaos`'s broker_kill scenario, seeded and shortened: two runs of the stack on an external Tansu
broker SIGKILLed after the services are ready (1.3 s: around the first group join; 6.2 s: while
fetching), twenty reports while it is down, the broker started again empty."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.chaos.broker_kill import broker_kill_run


@pytest.mark.parametrize("seed", [1, 5])
async def test_broker_sigkilled_at_a_seeded_moment_loses_and_doubles_nothing(
    seed: int, tmp_path: Path, database_server_url: str
) -> None:
    counts = await broker_kill_run(tmp_path, random.Random(seed), database_url=database_server_url)
    assert counts["accepted"] == 30, counts
    assert counts["lost"] == 0, counts
    assert counts["duplicated"] == 0, counts
    assert counts["routed"] == 30, counts
    assert counts["unalerted"] == 0, counts
    assert counts["recovery"] is not None and counts["recovery"] <= 30, counts
