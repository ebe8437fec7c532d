"""Benchmark scenarios against the running embedded stack (contract calls only, over loopback HTTP)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import psutil

from tests.bench.harness import Recorder, closed_loop, open_loop
from tests.processes import SERVICES, LaunchedStack
from tests.support import contract_report

Outcome = tuple[str, list[dict[str, Any]], str]
FIRST = ["Ermira", "Drita", "Arta", "Blerina", "Elona", "Fatjona", "Gentiana", "Klodiana", "Lindita", "Mirela"]
LAST = ["Hoxha", "Kola", "Shehu", "Leka", "Dervishi", "Gjoka", "Marku", "Prifti", "Rama", "Zeqiri"]


def varied_report(municipality: str, i: int, **overrides: Any) -> dict[str, Any]:
    body = contract_report(municipality, **overrides)
    body["survivor"] = {**body["survivor"], "first_name": FIRST[i % 10] + chr(97 + (i // 10) % 26),
                        "last_name": LAST[(i // 7) % 10] + chr(97 + (i // 260) % 26)}
    return body


async def _setup_members(client: httpx.AsyncClient, stack: LaunchedStack, municipality: str) -> None:
    headers = stack.headers("coordinator", municipality)
    for kind in ("social_services", "police", "child_protection", "shelter", "health", "legal_aid"):
        response = await client.post(
            f"{stack.url('referral')}/v1/members",
            json={"name": f"{kind} office", "kind": kind, "municipality": municipality, "services": [kind]},
            headers=headers,
        )
        response.raise_for_status()


async def intake_throughput(stack: LaunchedStack, quick: bool) -> Outcome:
    """Intake: reports accepted per second and latency at fixed concurrency."""
    rows = []
    seconds = 3 if quick else 15
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=128)) as client:
        for concurrency in (16, 64):
            municipality = f"bench{uuid.uuid4().hex[:6]}"
            headers = stack.headers("police", municipality, "--member-id", "bench-police")

            async def report(i: int, municipality: str = municipality, headers: dict[str, str] = headers) -> bool:
                response = await client.post(
                    f"{stack.url('intake')}/v1/cases", json=varied_report(municipality, i), headers=headers
                )
                return response.status_code == 201

            recorder, rate = await closed_loop(report, concurrency=concurrency, seconds=seconds)
            rows.append({"clients": concurrency, "reports/s": round(rate, 1), **recorder.summary_ms(),
                         "errors": recorder.errors})
    return ("Intake: reports per second", rows, f"Closed loop, {seconds} s per row after 1 s warm-up; "
            "each report is the full contract body with a duplicate search.")


async def _poll(fetch: Callable[[], Awaitable[bool]], timeout: float = 30) -> bool:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if await fetch():
            return True
        await asyncio.sleep(0.01)
    return False


async def report_to_referral(stack: LaunchedStack, quick: bool) -> Outcome:
    """Report accepted at intake → referral visible at the referral API, at a fixed arrival rate."""
    municipality = f"bench{uuid.uuid4().hex[:6]}"
    rate, seconds = 20.0, (3 if quick else 15)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=128)) as client:
        await _setup_members(client, stack, municipality)
        reporter = stack.headers("police", municipality, "--member-id", "bench-police")
        coordinator = stack.headers("coordinator", municipality)

        async def one(i: int) -> float | None:
            created = await client.post(
                f"{stack.url('intake')}/v1/cases", json=varied_report(municipality, i), headers=reporter
            )
            if created.status_code != 201:
                return None
            accepted = time.perf_counter()
            case_id = created.json()["id"]

            async def visible() -> bool:
                response = await client.get(
                    f"{stack.url('referral')}/v1/referrals", params={"case_id": case_id}, headers=coordinator
                )
                return response.status_code == 200 and bool(response.json())

            return time.perf_counter() - accepted if await _poll(visible) else None

        recorder = await open_loop(one, rate=rate, seconds=seconds)
    return ("Report → referral visible", [{"rate/s": rate, **recorder.summary_ms(), "lost": recorder.errors}],
            "Latency from the 201 at intake to the first referral listed by GET /v1/referrals?case_id= "
            "(polled every 10 ms).")


async def event_to_inbox(stack: LaunchedStack, quick: bool) -> Outcome:
    """High-risk report → alert in the coordinator's inbox."""
    municipality = f"bench{uuid.uuid4().hex[:6]}"
    rate, seconds = 10.0, (3 if quick else 10)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=128)) as client:
        reporter = stack.headers("police", municipality, "--member-id", "bench-police")
        coordinator = stack.headers("coordinator", municipality)

        async def one(i: int) -> float | None:
            body = varied_report(municipality, i, risk_answers={"threats_to_kill": True})
            created = await client.post(f"{stack.url('intake')}/v1/cases", json=body, headers=reporter)
            if created.status_code != 201:
                return None
            accepted = time.perf_counter()
            case_id = created.json()["id"]

            async def arrived() -> bool:
                response = await client.get(
                    f"{stack.url('notifications')}/v1/inbox", params={"limit": 50}, headers=coordinator
                )
                items = response.json() if response.status_code == 200 else []
                items = items.get("items", items) if isinstance(items, dict) else items
                return any(a.get("case_id") == case_id for a in items)

            return time.perf_counter() - accepted if await _poll(arrived) else None

        recorder = await open_loop(one, rate=rate, seconds=seconds)
    return ("Report → coordinator inbox", [{"rate/s": rate, **recorder.summary_ms(), "lost": recorder.errors}],
            "Latency from the 201 at intake to the alert listed by GET /v1/inbox (polled every 10 ms).")


async def placements_under_contention(stack: LaunchedStack, quick: bool) -> Outcome:
    """Placements per second with every client taking beds of the same shelter."""
    municipality = f"bench{uuid.uuid4().hex[:6]}"
    seconds = 3 if quick else 10
    rows = []
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=128)) as client:
        coordinator = stack.headers("coordinator", municipality)
        reporter = stack.headers("coordinator", municipality)
        cases = []
        for i in range(50):
            created = await client.post(
                f"{stack.url('intake')}/v1/cases", json=varied_report(municipality, i), headers=reporter
            )
            created.raise_for_status()
            cases.append(created.json()["id"])
        await asyncio.sleep(2)  # let the shelter service learn the cases
        for concurrency in (8, 32):
            shelter = await client.post(
                f"{stack.url('shelter')}/v1/shelters",
                json={"name": "Bench shelter", "operator": "Bench NGO", "kind": "emergency",
                      "municipality": municipality, "capacity": 100000, "accepts_children": True,
                      "address": "Rruga 1", "phone": "+355000"},
                headers=coordinator,
            )
            shelter.raise_for_status()
            shelter_id = shelter.json()["id"]

            async def place(i: int, shelter_id: str = shelter_id) -> bool:
                response = await client.post(
                    f"{stack.url('shelter')}/v1/placements",
                    json={"case_id": cases[i % len(cases)], "shelter_id": shelter_id, "adults": 1,
                          "children": 0, "planned_until": "2027-06-30"},
                    headers=coordinator,
                )
                return response.status_code == 201

            recorder, rate = await closed_loop(place, concurrency=concurrency, seconds=seconds)
            rows.append({"clients": concurrency, "placements/s": round(rate, 1), **recorder.summary_ms(),
                         "errors": recorder.errors})
    return ("Shelter: placements under contention", rows,
            "All clients place into one shelter: every placement updates the same row.")


async def memory(stack: LaunchedStack, quick: bool) -> Outcome:
    """Resident memory of each service after the load above."""
    assert stack.proc is not None
    rows = []
    launcher = psutil.Process(stack.proc.pid)
    for child in launcher.children(recursive=True):
        try:
            cmdline = child.cmdline()
        except psutil.Error:
            continue
        for name in SERVICES:
            if "serve" in cmdline and name in cmdline:
                rows.append({"service": name, "rss_mb": round(child.memory_info().rss / 1024 / 1024, 1)})
    return ("Memory per service (RSS)", sorted(rows, key=lambda r: SERVICES.index(r["service"])), "Target: 150 MB.")


ALL: list[Callable[[LaunchedStack, bool], Awaitable[Outcome]]] = [
    intake_throughput,  # type: ignore[list-item]
    report_to_referral,  # type: ignore[list-item]
    event_to_inbox,  # type: ignore[list-item]
    placements_under_contention,  # type: ignore[list-item]
    memory,  # type: ignore[list-item]
]
__all__ = ["ALL", "Recorder"]
