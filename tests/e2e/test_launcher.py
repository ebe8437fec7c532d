"""`mkr run` (what `make run` calls): everything ready, tokens accepted, Ctrl-C stops all, data kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from shared.embedded import free_port, port_open
from tests.support import contract_report

SERVICES = ("intake", "referral", "shelter", "notifications")


def _env(state: Path, ports: dict[str, int], broker_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MKR_")}
    env.update({f"MKR_{name.upper()}_PORT": str(port) for name, port in ports.items()})
    env["MKR_STATE_DIR"] = str(state)
    env["MKR_EMBEDDED_BROKER_PORT"] = str(broker_port)
    return env


def _wait_ready(ports: dict[str, int], proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    pending = dict(ports)
    with httpx.Client(timeout=2) as client:
        while pending and time.monotonic() < deadline:
            assert proc.poll() is None, "the launcher exited early"
            for name, port in list(pending.items()):
                try:
                    if client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        del pending[name]
                except httpx.HTTPError:
                    pass
            time.sleep(0.25)
    assert not pending, f"not ready within {timeout} s: {pending}"


def _token(env: dict[str, str], role: str, municipality: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "shared.cli", "token", "--role", role, "--municipality", municipality],
        env=env, capture_output=True, check=True, timeout=30,
    )
    return out.stdout.decode().strip()


def _stop(proc: subprocess.Popen[bytes], ports: dict[str, int], broker_port: int) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=45) == 0
    for port in [*ports.values(), broker_port]:
        assert not port_open("127.0.0.1", port), f"port {port} still open after Ctrl-C"


def test_run_serves_all_four_and_stops_cleanly_then_reuses_its_data(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ports = {name: free_port() for name in SERVICES}
    broker_port = free_port()
    env = _env(state, ports, broker_port)
    launcher = [sys.executable, "-m", "shared.cli", "run"]

    proc = subprocess.Popen(launcher, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(ports, proc)
        headers = {"Authorization": f"Bearer {_token(env, 'coordinator', 'elbasan')}"}
        created = httpx.post(
            f"http://127.0.0.1:{ports['intake']}/v1/cases", json=contract_report("elbasan"), headers=headers,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        case_id = created.json()["id"]
        forged = httpx.get(
            f"http://127.0.0.1:{ports['intake']}/v1/cases/{case_id}",
            headers={"Authorization": "Bearer " + headers["Authorization"].split()[1][:-4] + "AAAA"},
            timeout=10,
        )
        assert forged.status_code == 401
    finally:
        _stop(proc, ports, broker_port)
    assert not (state / "pg" / "postmaster.pid").exists(), "PostgreSQL left running"

    proc = subprocess.Popen(launcher, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(ports, proc)
        again = httpx.get(
            f"http://127.0.0.1:{ports['intake']}/v1/cases/{case_id}",
            headers={"Authorization": f"Bearer {_token(env, 'coordinator', 'elbasan')}"},
            timeout=10,
        )
        assert again.status_code == 200, again.text
    finally:
        _stop(proc, ports, broker_port)
