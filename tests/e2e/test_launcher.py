"""`mkr run` (what `make run` calls): everything ready, tokens accepted, Ctrl-C stops all, data kept."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from shared.embedded import stop_postgres
from tests.processes import LaunchedStack
from tests.support import contract_report


# Two starts of the whole stack (PostgreSQL, the broker, five processes) and two stops: over two minutes on
# a loaded machine (embedded PostgreSQL takes a machine-wide lock to start and stop), past the default limit.
@pytest.mark.timeout(480)
async def test_run_serves_all_four_and_stops_cleanly_then_reuses_its_data() -> None:
    # Not under pytest's basetemp: every pytest session that starts on the machine takes the group and other
    # bits off /tmp/pytest-of-<user>, and then the embedded server's own user can no longer reach its data
    # directory there: `pg_ctl stop` failed ("could not access directory") and PostgreSQL was left running.
    state = Path(tempfile.mkdtemp(prefix="mkr-test-launcher-"))
    try:
        # In a thread: the stack starts twice (a minute under load), and the session's event loop, with the
        # session's services on it, must not stand still that long.
        await asyncio.to_thread(_run_twice, state)
    finally:
        await asyncio.to_thread(stop_postgres, state / "state")  # only if a failure left it running
        shutil.rmtree(state, ignore_errors=True)


def _run_twice(tmp_path: Path) -> None:
    stack = LaunchedStack(state=tmp_path / "state")
    stack.start(timeout=180)
    try:
        headers = stack.headers("coordinator", "elbasan")
        created = httpx.post(f"{stack.url('intake')}/v1/cases", json=contract_report("elbasan"), headers=headers,
                             timeout=10)
        assert created.status_code == 201, created.text
        case_id = created.json()["id"]
        bearer = headers["Authorization"].split()[1]
        forged = httpx.get(f"{stack.url('intake')}/v1/cases/{case_id}",
                           headers={"Authorization": f"Bearer {bearer[:-4]}AAAA"}, timeout=10)
        assert forged.status_code == 401
        login = httpx.get(f"{stack.url('console')}/login", timeout=10)  # the console, with the local sign-in form
        assert login.status_code == 200 and 'action="/login/local"' in login.text
    finally:
        assert stack.stop(timeout=150) == 0
    assert not (stack.state / "pg" / "postmaster.pid").exists(), "PostgreSQL left running"

    stack.start(timeout=180)  # same state dir: the data is still there
    try:
        # The token `mkr token` printed before the restart: the signing key is kept with the data (and one
        # `mkr token` process fewer: each imports the whole code base, seconds on a loaded machine).
        again = httpx.get(f"{stack.url('intake')}/v1/cases/{case_id}", headers=headers, timeout=10)
        assert again.status_code == 200, again.text
    finally:
        assert stack.stop(timeout=150) == 0
