"""The embedded stack as real processes (`mkr run`), for the launcher test, benchmarks and chaos runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from shared.embedded import free_port, port_open
from shared.settings import Settings

SERVICES = ("intake", "referral", "shelter", "notifications", "console")


@dataclass
class LaunchedStack:
    """`mkr run` in a child process, on free ports, with its state under `state`."""

    state: Path
    ports: dict[str, int] = field(default_factory=lambda: {name: free_port() for name in SERVICES})
    broker_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MKR_")}
        env.update({f"MKR_{name.upper()}_PORT": str(port) for name, port in self.ports.items()})
        env["MKR_STATE_DIR"] = str(self.state)
        env["MKR_EMBEDDED_BROKER_PORT"] = str(self.broker_port)
        env["MKR_WORKERS"] = "1"  # one process per service unless a test asks for workers (extra_env)
        env.update(self.extra_env)
        return env

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def start(self, output: IO[bytes] | int = subprocess.DEVNULL, timeout: float = 90) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mkr.cli", "run"], env=self.env, stdout=output, stderr=output
        )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 90) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        pending = dict(self.ports)
        with httpx.Client(timeout=2) as client:
            while pending and time.monotonic() < deadline:
                assert self.proc.poll() is None, "the launcher exited early"
                for name, port in list(pending.items()):
                    try:
                        if client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                            del pending[name]
                    except httpx.HTTPError:
                        pass
                time.sleep(0.25)
        assert not pending, f"not ready within {timeout} s: {sorted(pending)}"

    def token(self, role: str, municipality: str, *extra: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "mkr.cli", "token", "--role", role, "--municipality", municipality,
             "--ttl", "86400", *extra],
            env=self.env, capture_output=True, check=True, timeout=30,
        )
        return out.stdout.decode().strip()

    def headers(self, role: str, municipality: str, *extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, municipality, *extra)}"}

    def stop(self, timeout: float = 45) -> int:
        """Ctrl-C, as a person would; returns the exit code and checks every port is released."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=timeout)
        for port in [*self.ports.values(), self.broker_port]:
            assert not port_open("127.0.0.1", port), f"port {port} still open after Ctrl-C"
        return code


def service_env(settings: Settings, workers: int = 1) -> dict[str, str]:
    """The environment under which a separate `mkr serve` sees the settings' database, topics and keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MKR_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        {
            "MKR_ENVIRONMENT": settings.environment,
            "MKR_STATE_DIR": str(settings.state_dir),
            "MKR_DATABASE_URL": str(settings.database_url),
            "MKR_DATABASE_PREFIX": settings.database_prefix,
            "MKR_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "MKR_KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
            "MKR_KAFKA_ENABLE_IDEMPOTENCE": str(settings.kafka_enable_idempotence).lower(),
            "MKR_JWT_ISSUER": settings.jwt_issuer,
            "MKR_JWT_AUDIENCE": settings.jwt_audience,
            "MKR_DB_POOL_SIZE": "4",
            "MKR_DB_MAX_OVERFLOW": "4",
            "MKR_LOG_LEVEL": "WARNING",
            "MKR_WORKERS": str(workers),
        }
    )
    return env


@dataclass
class Served:
    """One `mkr serve` process (with its workers, if any)."""

    url: str
    port: int
    proc: subprocess.Popen[bytes]


@contextmanager
def serve_processes(
    settings: Settings, service: str, count: int, workers: int = 1, extra_env: dict[str, str] | None = None
) -> Iterator[list[Served]]:
    """`count` `mkr serve --service <service>` processes of `workers` workers each, on the settings' database."""
    env = {**service_env(settings, workers), **(extra_env or {})}
    ports = [free_port() for _ in range(count)]
    logs = [(settings.state_dir / f"serve-{service}-{port}.log").open("wb") for port in ports]  # for a failure
    served = [
        Served(
            f"http://127.0.0.1:{port}",
            port,
            subprocess.Popen(
                [sys.executable, "-m", "mkr.cli", "serve", "--service", service, "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            ),
        )
        for port, log in zip(ports, logs, strict=True)
    ]
    try:
        yield served
    finally:
        for one in served:
            one.proc.terminate()
        for one in served:
            try:
                one.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                one.proc.kill()
                one.proc.wait(timeout=5)
        for log in logs:
            log.close()
