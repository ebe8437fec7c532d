"""The broker SIGKILLed at a random moment: the stack on an external Tansu broker, as an operator runs it.

One run: a memory-only Tansu broker started here (not by the launcher), `mkr run` pointed at it with
`MKR_KAFKA_BOOTSTRAP` (`MKR_KAFKA_ENABLE_IDEMPOTENCE=false`), ten reports, the broker killed with SIGKILL
at a random moment 0-10 s after the services answered ready (so during the first group join, a
rebalance, a fetch or a commit), twenty reports while it is down, the broker started again (empty).
The run then waits (bounded, generously) for every case to be routed and alerted before counting:
accepted, routed, late (routed more than LATE_SECONDS after the broker's return), duplicated, lost
(accepted, never routed within SETTLE_SECONDS), unalerted (no new-case alert in the coordinator's inbox);
with the seconds from the broker's return to the first case routed after it (`recovery`) and to every
case routed and alerted (`converged`).
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from mkr.registry import SERVICES
from shared import db
from shared.embedded import free_port, start_broker
from shared.keys import issue_token
from shared.settings import Settings
from tests.chaos.launch import launched_stack
from tests.processes import LaunchedStack
from tests.support import contract_report

BEFORE = 10  # reports before (and around) the kill
DURING = 20  # reports while the broker is down
KILL_WINDOW = (0.0, 10.0)  # seconds after ready
# Bounded but generous: on a loaded machine a full recovery can take minutes, and only a case still not
# routed then is lost. One routed later than LATE_SECONDS after the broker's return is counted as late.
SETTLE_SECONDS = 300.0
LATE_SECONDS = 30.0


def _kill(broker: subprocess.Popen[bytes]) -> None:
    if broker.poll() is None:
        broker.kill()  # SIGKILL
        broker.wait(10)


async def _report(client: httpx.AsyncClient, stack: LaunchedStack, headers: dict[str, str],
                  municipality: str) -> str | None:
    """One report, retried with its idempotency key until intake answers; the case id when accepted."""
    body = contract_report(municipality, risk_answers={"threats_to_kill": True})
    key = str(uuid.uuid4())
    for _ in range(40):
        try:
            response = await client.post(f"{stack.url('intake')}/v1/cases", json=body,
                                         headers={**headers, "Idempotency-Key": key}, timeout=15)
        except httpx.HTTPError:
            await asyncio.sleep(0.5)
            continue
        return str(response.json()["id"]) if response.status_code == 201 else None
    return None


async def _routed(client: httpx.AsyncClient, stack: LaunchedStack, headers: dict[str, str],
                  cases: list[str]) -> tuple[set[str], int]:
    """Cases with their social-services referral, and referrals beyond one per (case, member)."""
    routed: set[str] = set()
    duplicated = 0
    for case_id in cases:
        try:
            response = await client.get(f"{stack.url('referral')}/v1/referrals", params={"case_id": case_id},
                                        headers=headers, timeout=10)
        except httpx.HTTPError:
            continue
        if response.status_code != 200:
            continue
        members = [str(r.get("to_member_id")) for r in response.json()["items"]]
        duplicated += len(members) - len(set(members))
        if any(r.get("to_member_kind") == "social_services" for r in response.json()["items"]):
            routed.add(case_id)
    return routed, duplicated


async def _alerts(client: httpx.AsyncClient, stack: LaunchedStack, headers: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    cursor = None
    try:
        while True:
            params: dict[str, Any] = {"limit": 200}
            if cursor:
                params["cursor"] = cursor
            page = await client.get(f"{stack.url('notifications')}/v1/inbox", params=params, headers=headers,
                                    timeout=10)
            data = page.json()
            items = data.get("items", []) if isinstance(data, dict) else data
            for alert in items:
                if alert.get("type") in ("case.reported", "case.high_risk", "high_risk_case"):
                    counts[str(alert.get("case_id"))] = counts.get(str(alert.get("case_id")), 0) + 1
            cursor = data.get("next_cursor") if isinstance(data, dict) else None
            if not cursor:
                return counts
    except (httpx.HTTPError, ValueError, AttributeError):
        return counts


async def broker_kill_run(workdir: Path, rng: random.Random, *, database_url: str | None = None) -> dict[str, Any]:
    """One run; returns its counts (`lost` and `duplicated` must be 0) and timings."""
    port = free_port()
    broker_log = workdir / "tansu.log"
    broker = await asyncio.to_thread(start_broker, port, broker_log)
    env = {"MKR_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}", "MKR_KAFKA_ENABLE_IDEMPOTENCE": "false",
           "MKR_LOG_LEVEL": "INFO"}
    prefix = f"mkrc_{uuid.uuid4().hex[:8]}_"
    if database_url:
        env.update({"MKR_DATABASE_URL": database_url, "MKR_DATABASE_PREFIX": prefix})
    kill_after = rng.uniform(*KILL_WINDOW)
    brokers = [broker]
    try:
        async with launched_stack(workdir, extra_env=env) as stack:
            ready_at = time.monotonic()
            settings = Settings(state_dir=stack.state, _env_file=None)  # type: ignore[call-arg]
            municipality = f"chaos{uuid.uuid4().hex[:6]}"
            coordinator = {"Authorization": "Bearer " + issue_token(settings, role="coordinator",
                                                                     municipality=municipality, ttl=3600)}
            police = {"Authorization": "Bearer " + issue_token(settings, role="police", municipality=municipality,
                                                                member_id="chaos-police", ttl=3600)}
            async with httpx.AsyncClient() as client:
                killed_at, cases, refused = await _reports_around_the_kill(
                    client, stack, coordinator, police, municipality, broker, ready_at + kill_after)
                routed_before, _ = await _routed(client, stack, coordinator, cases)
                brokers.append(await asyncio.to_thread(start_broker, port, broker_log))  # back, empty
                returned_at = time.monotonic()
                counts = await _converge(client, stack, coordinator, cases, routed_before, returned_at)
        return {"kill_after": round(kill_after, 2), "down": round(returned_at - killed_at, 1),
                "accepted": len(cases), "refused": refused, **counts,
                "routed_before_return": len(routed_before), "recreated": _recreations(workdir / "stack.log")}
    finally:
        for proc in brokers:
            _kill(proc)
        if database_url:
            await _drop(database_url, prefix, workdir)


async def _reports_around_the_kill(
    client: httpx.AsyncClient, stack: LaunchedStack, coordinator: dict[str, str], police: dict[str, str],
    municipality: str, broker: subprocess.Popen[bytes], kill_at: float,
) -> tuple[float, list[str], int]:
    """The directory, BEFORE reports with the broker SIGKILLed at `kill_at`, DURING reports after it."""

    async def kill_later() -> float:
        await asyncio.sleep(max(0.0, kill_at - time.monotonic()))
        await asyncio.to_thread(_kill, broker)
        return time.monotonic()

    killer = asyncio.create_task(kill_later())
    for kind in ("social_services", "police", "child_protection", "shelter", "legal_aid"):
        response = await client.post(
            f"{stack.url('referral')}/v1/members",
            json={"name": f"{kind} office", "kind": kind, "municipality": municipality, "services": [kind]},
            headers=coordinator, timeout=15,
        )
        response.raise_for_status()
    cases: list[str] = []
    refused = 0
    for n in range(BEFORE + DURING):
        if n == BEFORE:
            killed_at = await killer
        case_id = await _report(client, stack, police, municipality)
        if case_id:
            cases.append(case_id)
        else:
            refused += 1
    return killed_at, cases, refused


async def _converge(client: httpx.AsyncClient, stack: LaunchedStack, headers: dict[str, str], cases: list[str],
                    routed_before: set[str], returned_at: float) -> dict[str, Any]:
    """Wait (up to SETTLE_SECONDS) until every case is routed and alerted, then count.

    Late is not lost: a case routed more than LATE_SECONDS after the broker's return is `late`; only one
    never routed within the generous bound is `lost`. `recovery`: the first case routed after the
    return; `converged`: every case routed and alerted (None: not within the bound).
    """
    first_routed: dict[str, float] = dict.fromkeys(routed_before, 0.0)
    converged: float | None = None
    deadline = returned_at + SETTLE_SECONDS
    while time.monotonic() < deadline:
        routed, _ = await _routed(client, stack, headers, cases)
        for case_id in routed:
            first_routed.setdefault(case_id, time.monotonic() - returned_at)
        if len(routed) == len(cases):
            # The notifications service consumes the same events: every case alerted too.
            if set(cases) <= set(await _alerts(client, stack, headers)):
                converged = time.monotonic() - returned_at
                break
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)  # a late duplicate would show now
    routed, duplicated = await _routed(client, stack, headers, cases)
    alerts = await _alerts(client, stack, headers)
    duplicated += sum(n - 1 for n in alerts.values() if n > 1)
    after = [t for case_id, t in first_routed.items() if case_id not in routed_before]
    return {
        "routed": len(routed), "late": sum(t > LATE_SECONDS for t in after), "duplicated": duplicated,
        "lost": len(set(cases) - routed), "alerted": len(set(cases) & set(alerts)),
        "unalerted": len(set(cases) - set(alerts)),
        "recovery": round(min(after), 2) if after else None,
        "converged": None if converged is None else round(converged, 1),
    }


async def _drop(database_url: str, prefix: str, workdir: Path) -> None:
    settings = Settings(database_url=database_url, database_prefix=prefix, state_dir=workdir,
                        _env_file=None)  # type: ignore[call-arg]
    for service in SERVICES:
        try:
            await db.drop_database(settings, service)
        except Exception as exc:  # a leftover database must not hide the counts
            print(f"could not drop {prefix}{service}: {type(exc).__name__}")


def _recreations(stack_log: Path) -> int:
    """How many times the stack's watchdogs recreated a consumer (their WARNING lines) during the run."""
    try:
        text = stack_log.read_text(errors="replace")
    except OSError:
        return -1
    return sum("consumer" in line and "recreating it" in line for line in text.splitlines())


def verdict(counts: dict[str, Any]) -> bool:
    """A run passes when nothing accepted was lost, doubled or left without its alert, and routing resumed."""
    return (counts["lost"] == 0 and counts["duplicated"] == 0 and counts["unalerted"] == 0
            and counts["recovery"] is not None)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]
