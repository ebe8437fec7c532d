"""`make chaos`: faults against the embedded stack as real processes, with counts of what survived.

Three runs, each on a fresh `mkr run` (loopback only, bounded in time):
1. the broker frozen for 30 s during a stream of reports, then killed and restarted empty (memory);
2. the referral service killed with SIGKILL mid-stream and restarted by the launcher;
3. PostgreSQL restarted: services go unready and come back without a restart.
For each: accepted (201 at intake), routed (cases with their social-services referral), duplicated
(a member referred twice for one case, or a second new-case alert), lost (accepted but never routed).
Then `broker_kill` (tests/chaos/broker_kill.py) BROKER_KILL_RUNS times: the stack on an external Tansu
broker SIGKILLed at a random moment 0-10 s after ready, started again empty, waited for until every case is
routed and alerted (bounded; late is counted apart from lost); with the recovery time from
the broker's return to the first routed case (p50, max).
Exit status 1 when anything is lost or duplicated.

`python -m tests.chaos --only broker_kill --runs 20 --seed 7` runs just that scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from shared.embedded import ensure_postgres, stop_postgres
from tests.chaos.broker_kill import LATE_SECONDS, SETTLE_SECONDS, broker_kill_run, percentile, verdict
from tests.chaos.launch import launched_stack
from tests.processes import LaunchedStack
from tests.support import contract_report

STREAM_SECONDS = 45.0
RATE = 4.0  # reports per second during the stream


def _child(stack: LaunchedStack, predicate: Callable[[list[str]], bool]) -> psutil.Process | None:
    assert stack.proc is not None
    for proc in psutil.Process(stack.proc.pid).children(recursive=True):
        try:
            if predicate(proc.cmdline()):
                return proc
        except psutil.Error:
            continue
    return None


async def _report_stream(client: httpx.AsyncClient, stack: LaunchedStack, municipality: str,
                         seconds: float) -> tuple[list[str], int]:
    """Send reports at RATE for `seconds`, retrying each with its idempotency key until answered."""
    headers = stack.headers("police", municipality, "--member-id", "chaos-police")
    accepted: list[str] = []
    refused = 0
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        body = contract_report(municipality, risk_answers={"threats_to_kill": True})
        key = str(uuid.uuid4())
        for _ in range(20):
            try:
                response = await client.post(f"{stack.url('intake')}/v1/cases", json=body,
                                             headers={**headers, "Idempotency-Key": key}, timeout=10)
            except httpx.HTTPError:
                await asyncio.sleep(0.5)
                continue
            if response.status_code == 201:
                accepted.append(response.json()["id"])
            else:
                refused += 1
            break
        n += 1
        await asyncio.sleep(max(0.0, start + n / RATE - time.monotonic()))
    return accepted, refused


async def _count(client: httpx.AsyncClient, stack: LaunchedStack, municipality: str,
                 accepted: list[str]) -> dict[str, int]:
    coordinator = stack.headers("coordinator", municipality)
    deadline = time.monotonic() + SETTLE_SECONDS
    routed: set[str] = set()
    duplicated = 0
    alerts: Counter[str] = Counter()
    while time.monotonic() < deadline:
        routed.clear()
        duplicated = 0
        pairs: Counter[tuple[str, str]] = Counter()
        for case_id in accepted:
            try:
                response = await client.get(f"{stack.url('referral')}/v1/referrals", params={"case_id": case_id},
                                            headers=coordinator, timeout=10)
            except httpx.HTTPError:
                break
            if response.status_code != 200:
                break
            for referral in response.json()["items"]:
                pairs[(case_id, str(referral.get("to_member_id")))] += 1
                if referral.get("to_member_kind") == "social_services":
                    routed.add(case_id)
        duplicated = sum(n - 1 for n in pairs.values() if n > 1)
        alerts = Counter()
        try:
            cursor = None
            while True:
                params: dict[str, Any] = {"limit": 200}
                if cursor:
                    params["cursor"] = cursor
                page = await client.get(f"{stack.url('notifications')}/v1/inbox", params=params,
                                        headers=coordinator, timeout=10)
                data = page.json()
                items = data.get("items", []) if isinstance(data, dict) else data
                for alert in items:
                    if alert.get("type") in ("case.reported", "case.high_risk", "high_risk_case"):
                        alerts[str(alert.get("case_id"))] += 1
                cursor = data.get("next_cursor") if isinstance(data, dict) else None
                if not cursor:
                    break
        except (httpx.HTTPError, ValueError):
            pass
        if len(routed) == len(accepted):
            break
        await asyncio.sleep(2)
    duplicated += sum(n - 1 for n in alerts.values() if n > 1)
    return {"accepted": len(accepted), "routed": len(routed), "duplicated": duplicated,
            "lost": len(set(accepted) - routed), "alerted": len(alerts)}


async def _setup(client: httpx.AsyncClient, stack: LaunchedStack, municipality: str) -> None:
    headers = stack.headers("coordinator", municipality)
    for kind in ("social_services", "police", "child_protection", "shelter", "legal_aid"):
        response = await client.post(
            f"{stack.url('referral')}/v1/members",
            json={"name": f"{kind} office", "kind": kind, "municipality": municipality, "services": [kind]},
            headers=headers, timeout=10,
        )
        response.raise_for_status()


async def _with_fault(stack: LaunchedStack, fault: Callable[[], Awaitable[None]]) -> dict[str, int]:
    municipality = f"chaos{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient() as client:
        await _setup(client, stack, municipality)
        stream = asyncio.create_task(_report_stream(client, stack, municipality, STREAM_SECONDS))
        await asyncio.sleep(5)
        await fault()
        accepted, _ = await stream
        return await _count(client, stack, municipality, accepted)


async def broker_outage(stack: LaunchedStack) -> dict[str, int]:
    async def fault() -> None:
        broker = _child(stack, lambda cmd: any("tansu" in part for part in cmd))
        assert broker is not None, "no broker process found"
        broker.send_signal(signal.SIGSTOP)
        await asyncio.sleep(30)
        broker.send_signal(signal.SIGKILL)  # the launcher starts a new, empty one
        broker.send_signal(signal.SIGCONT)

    return await _with_fault(stack, fault)


async def service_killed(stack: LaunchedStack) -> dict[str, int]:
    async def fault() -> None:
        for name in ("referral", "notifications"):
            victim = _child(stack, lambda cmd, name=name: "serve" in cmd and name in cmd)
            assert victim is not None, f"no {name} process found"
            os.kill(victim.pid, signal.SIGKILL)
            await asyncio.sleep(3)

    return await _with_fault(stack, fault)


async def postgres_restart(stack: LaunchedStack) -> dict[str, int]:
    unready_seen: list[str] = []

    async def fault() -> None:
        await asyncio.to_thread(stop_postgres, stack.state)
        async with httpx.AsyncClient() as client:
            for name in ("intake", "referral"):
                probe = await client.get(f"{stack.url(name)}/readyz", timeout=10)
                if probe.status_code == 503:
                    unready_seen.append(name)
        await asyncio.sleep(5)
        await asyncio.to_thread(ensure_postgres, stack.state)

    counts = await _with_fault(stack, fault)
    counts["unready_during_outage"] = len(unready_seen)
    return counts


BROKER_KILL_RUNS = 20


async def broker_kill_runs(runs: int, seed: int) -> int:
    """The broker-kill scenario `runs` times; returns the number of failed runs."""
    rng = random.Random(seed)
    failures = 0
    results: list[dict[str, Any]] = []
    database_url = os.environ.get("MKR_CHAOS_DATABASE_URL")  # a server of one's own: faster than embedded
    for n in range(1, runs + 1):
        with tempfile.TemporaryDirectory(prefix="mkr-chaos-") as tmp:
            try:
                counts = await broker_kill_run(Path(tmp), rng, database_url=database_url)
            except Exception as exc:
                counts = {"error": type(exc).__name__, "lost": -1, "duplicated": -1, "recovery": None}
                print(f"  run {n}: {exc!r}", flush=True)
        ok = "error" not in counts and verdict(counts)
        failures += not ok
        results.append(counts)
        print(f"broker_kill {n:>2}/{runs} " + " ".join(f"{k}={v}" for k, v in counts.items())
              + f"  {'ok' if ok else 'FAILED'}", flush=True)
    _summary(results, runs - failures)
    return failures


def _summary(results: list[dict[str, Any]], ok: int) -> None:
    """Recovery (first case routed after the return) and convergence (all routed and alerted), p50/max."""
    for key, what in (("recovery", "to the first routed case"), ("converged", "to every case routed and alerted")):
        values = [float(r[key]) for r in results if r.get(key) is not None]
        if values:
            print(f"broker_kill {key} from the broker's return {what}: p50={percentile(values, 0.5):.1f}s "
                  f"max={max(values):.1f}s over {len(values)} runs", flush=True)
    totals = {key: sum(max(0, int(r.get(key) or 0)) for r in results) for key in ("lost", "late", "duplicated")}
    print(f"broker_kill totals: lost={totals['lost']} late={totals['late']} duplicated={totals['duplicated']} "
          f"(late: routed > {LATE_SECONDS:g} s after the return; lost: not routed within {SETTLE_SECONDS:g} s); "
          f"{ok}/{len(results)} runs ok", flush=True)


async def main_async(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    parser.add_argument("--only", choices=("broker_outage", "service_killed", "postgres_restart", "broker_kill"))
    parser.add_argument("--runs", type=int, default=BROKER_KILL_RUNS, help="broker_kill runs")
    parser.add_argument("--seed", type=int, default=None, help="broker_kill kill moments (default: random)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    failures = 0
    for run in (broker_outage, service_killed, postgres_restart):
        if args.only and args.only != run.__name__:
            continue
        with tempfile.TemporaryDirectory(prefix="mkr-chaos-") as tmp:
            async with launched_stack(Path(tmp), timeout=90) as stack:
                counts = await run(stack)
        verdict_ = "ok" if counts["lost"] == 0 and counts["duplicated"] == 0 else "FAILED"
        failures += verdict_ != "ok"
        print(f"{run.__name__:<18} " + " ".join(f"{k}={v}" for k, v in counts.items()) + f"  {verdict_}",
              flush=True)
    if not args.only or args.only == "broker_kill":
        print(f"broker_kill seed={seed}", flush=True)
        failures += await broker_kill_runs(args.runs, seed)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main_async()))
