"""One way to run the stack for a chaos scenario: `mkr run` under a work directory, ready, then stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from tests.processes import LaunchedStack


@contextlib.asynccontextmanager
async def launched_stack(workdir: Path, *, extra_env: dict[str, str] | None = None,
                         timeout: float = 120) -> AsyncIterator[LaunchedStack]:
    """`mkr run` with its state in `workdir/state` and its output in `workdir/stack.log`, answering ready.

    Started and stopped (Ctrl-C) in a thread: both wait for seconds, and the caller's event loop must go
    on meanwhile (under pytest it also runs the session's services, whose consumers a frozen loop
    would leave without a fetch or a heartbeat for that long).
    """
    stack = LaunchedStack(state=workdir / "state", extra_env=extra_env or {})
    with open(workdir / "stack.log", "wb") as log:
        try:
            await asyncio.to_thread(stack.start, output=log, timeout=timeout)
            yield stack
        finally:
            if stack.proc is not None and stack.proc.poll() is None:
                await asyncio.to_thread(stack.stop)
