"""The survivor's own file (issue #17; CONTRACT §12): everything the four services hold on a case's
survivor, as one JSON document (and a PDF, services/intake/survivor_pdf.py).

Intake gathers the other services' parts over their **public API with the caller's own token** (the
coordinator's): each service applies its own visibility rules and audits the read as the coordinator's,
and no service-to-service credential exists that could be stolen. A part that a service does not give
(unreachable, refused) is named in `incomplete`, never silently left out.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from services.intake.config import IntakeConfig
from shared.settings import Settings

# (section, service, path): the parts the other services hold on a case.
PEER_PARTS: tuple[tuple[str, str, str], ...] = (
    ("referrals", "referral", "/v1/referrals?case_id={case_id}&limit=200"),
    ("routing", "referral", "/v1/cases/{case_id}/routing"),
    ("plan", "referral", "/v1/cases/{case_id}/plan"),
    ("placements", "shelter", "/v1/placements?case_id={case_id}&limit=200"),
    ("rent_bonus", "shelter", "/v1/rent-bonus/applications?case_id={case_id}&limit=200"),
    ("alerts", "notifications", "/v1/cases/{case_id}/alerts?limit=200"),
)
PEER_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
DEFAULT_PORTS = {"referral": 8002, "shelter": 8003, "notifications": 8004}  # CONTRACT §1


@dataclass(frozen=True)
class Peers:
    """How intake reaches the other services: base URLs, and (tests) in-process transports."""

    urls: dict[str, str]
    transports: dict[str, httpx.AsyncBaseTransport]
    # One TLS context for every client of every export: building one loads the CA bundle (tens of ms of CPU,
    # and six clients per export), and httpx builds one per client when given none.
    tls: ssl.SSLContext = field(default_factory=httpx.create_ssl_context, compare=False)

    @classmethod
    def configured(cls, settings: Settings, config: IntakeConfig,
                   transports: dict[str, httpx.AsyncBaseTransport] | None = None) -> Peers:
        urls = {}
        for name in ("referral", "shelter", "notifications"):
            url = getattr(config, f"{name}_url")
            local = f"http://127.0.0.1:{settings.port_of(name, DEFAULT_PORTS[name])}"
            urls[name] = str(url).rstrip("/") if url else local
        return cls(urls, dict(transports or {}))


MAX_PAGES = 50  # 50 pages of 200: far more than any case holds


async def _get(client: httpx.AsyncClient, path: str, authorization: str) -> tuple[int, Any]:
    try:
        response = await client.get(path, headers={"Authorization": authorization})
    except httpx.HTTPError:
        return 503, None
    if response.status_code != 200:
        return response.status_code, None
    try:
        return 200, response.json()
    except ValueError:
        return 502, None


async def _fetch(peers: Peers, service: str, path: str, authorization: str) -> tuple[int, Any]:
    """One part: an object, or every page of a list (`{"items", "next_cursor"}`) as one list."""
    async with httpx.AsyncClient(base_url=peers.urls[service], transport=peers.transports.get(service),
                                 verify=peers.tls, timeout=PEER_TIMEOUT, follow_redirects=False) as client:
        status, data = await _get(client, path, authorization)
        if status != 200 or not (isinstance(data, dict) and "items" in data):
            return status, data
        items = list(data["items"])
        for _ in range(MAX_PAGES):
            if not data.get("next_cursor"):
                return 200, items
            status, data = await _get(client, f"{path}&cursor={data['next_cursor']}", authorization)
            if status != 200 or not isinstance(data, dict):
                return status or 502, None
            items.extend(data.get("items", []))
        return 502, None  # more pages than any case can hold: refuse rather than cut it short


Missing = list[dict[str, Any]]
ONE_OBJECT = ("routing", "plan")  # the sections that are one object, not a list


async def gather_peers(peers: Peers, case_id: uuid.UUID, authorization: str) -> tuple[dict[str, Any], Missing]:
    """The other services' parts (concurrently), and the parts they did not give with their status."""
    answers = await asyncio.gather(
        *(_fetch(peers, service, path.format(case_id=case_id), authorization) for _, service, path in PEER_PARTS)
    )
    parts: dict[str, Any] = {}
    missing: Missing = []
    for (section, service, _), (status, data) in zip(PEER_PARTS, answers, strict=True):
        if status == 200:
            parts[section] = data
        elif status == 404 and section in ONE_OBJECT:
            parts[section] = None  # nothing held (the case was never routed or planned)
        else:
            missing.append({"section": section, "service": service, "status": status})
    return parts, missing


def document(intake_part: dict[str, Any], peer_parts: dict[str, Any], missing: Missing) -> dict[str, Any]:
    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "complete": not missing,
        "incomplete": missing,
        **intake_part,
        **peer_parts,
    }
