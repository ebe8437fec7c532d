"""The embedded default behind `make run`: a supervisor for PostgreSQL, the broker, four services and the console.

Foreground. Ctrl-C (or SIGTERM) stops the services, then the broker, then PostgreSQL. A service
that dies is restarted with back-off. Data stays under the state dir, so a second run reuses it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import httpx

from mkr.registry import APPS, port_of
from shared.embedded import ensure_postgres, port_open, start_broker, stop_postgres, stop_process
from shared.keys import ensure_local_keypair
from shared.settings import Settings

READY_TIMEOUT = 90.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        # Own session: the terminal's Ctrl-C reaches only the launcher, which stops children in order.
        self.proc = subprocess.Popen(self.argv, env=self.env, start_new_session=True)  # noqa: S603
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Launcher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = settings.state_dir.resolve()
        self.stopping = False
        self.broker: subprocess.Popen[bytes] | None = None
        self.started_postgres = False
        self.children: list[Child] = []

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def prepare(self) -> dict[str, str]:
        self.state.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["MKR_STATE_DIR"] = str(self.state)
        ensure_local_keypair(self.settings.model_copy(update={"state_dir": self.state}))

        if self.settings.database_url:
            print("PostgreSQL: using MKR_DATABASE_URL")
        else:
            print(f"PostgreSQL: embedded, data in {self.state / 'pg'}")
            env["MKR_DATABASE_URL"] = ensure_postgres(self.state)
            self.started_postgres = True

        if os.environ.get("MKR_KAFKA_BOOTSTRAP"):
            print(f"Kafka: using MKR_KAFKA_BOOTSTRAP={self.settings.kafka_bootstrap}")
        else:
            port = self.settings.embedded_broker_port
            if port_open("127.0.0.1", port):
                raise SystemExit(
                    f"127.0.0.1:{port} is taken: stop the other broker, or set MKR_KAFKA_BOOTSTRAP to use it"
                )
            print(f"Kafka: embedded Tansu broker on 127.0.0.1:{port} (memory only)")
            self.broker = start_broker(port, self.state / "broker.log")
            env["MKR_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{port}"
            # Tansu does not implement the idempotent producer.
            env["MKR_KAFKA_ENABLE_IDEMPOTENCE"] = "false"
        return env

    def start_services(self, env: dict[str, str]) -> None:
        # MKR_WORKERS reaches each `mkr serve` through the environment (unset: each runs one worker per CPU).
        workers = self.settings.workers or os.cpu_count() or 1
        print(f"Workers per service: {workers} (MKR_WORKERS)")
        for name in APPS:
            child = Child(name, [sys.executable, "-m", "mkr.cli", "serve", "--service", name], env)
            child.start()
            self.children.append(child)

    def wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        pending = {c.name: port_of(self.settings, c.name) for c in self.children}
        with httpx.Client(timeout=2) as client:
            while pending and time.monotonic() < deadline and not self.stopping:
                for name, port in list(pending.items()):
                    try:
                        if client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                            del pending[name]
                    except httpx.HTTPError:
                        pass
                time.sleep(0.25)
        if pending:
            print(f"not ready after {READY_TIMEOUT:.0f} s: {', '.join(pending)}", file=sys.stderr)
        return not pending

    def banner(self) -> None:
        print("\nMKR is running:")
        print(f"  {'console':<14} http://127.0.0.1:{port_of(self.settings, 'console')}   (open it in a browser)")
        for name in APPS:
            if name == "console":
                continue
            port = port_of(self.settings, name)
            print(f"  {name:<14} http://127.0.0.1:{port}   (docs: /docs, ready: /readyz)")
        print(
            "\nA token for the API:\n"
            "  .venv/bin/mkr token --role coordinator --municipality elbasan\n"
            "  curl -H \"Authorization: Bearer $(.venv/bin/mkr token --role coordinator --municipality elbasan)\""
            f" http://127.0.0.1:{port_of(self.settings, 'intake')}/v1/cases\n\nCtrl-C stops everything.\n",
            flush=True,
        )

    def supervise(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            for child in self.children:
                if child.alive() or now < child.next_start:
                    continue
                if child.proc is not None and child.next_start == 0.0:
                    # It just died: restart with back-off, reset once it has run for a minute.
                    if now - child.started_at > 60:
                        child.restarts = 0
                    child.restarts += 1
                    delay = min(30.0, 0.5 * 2 ** child.restarts)
                    print(f"{child.name} exited ({child.proc.returncode}); restarting in {delay:.1f} s",
                          file=sys.stderr)
                    child.next_start = now + delay
                    continue
                child.next_start = 0.0
                child.start()
            if self.broker is not None and self.broker.poll() is not None:
                print("the broker exited; restarting it (memory only: topics are recreated)", file=sys.stderr)
                self.broker = start_broker(self.settings.embedded_broker_port, self.state / "broker.log")
            time.sleep(0.2)

    def shutdown(self) -> None:
        print("\nstopping…", flush=True)
        for child in self.children:
            if child.alive() and child.proc is not None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait(5)
        if self.broker is not None:
            stop_process(self.broker)
        if self.started_postgres:
            stop_postgres(self.state)
        print("stopped.", flush=True)

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            env = self.prepare()
            self.start_services(env)
            ready = self.wait_ready()
            if ready:
                self.banner()
            self.supervise()
            return 0
        finally:
            self.shutdown()


def main() -> int:
    settings = Settings()
    return Launcher(settings).run()


if __name__ == "__main__":
    raise SystemExit(main())


