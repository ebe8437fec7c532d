"""Data for the console tests, put in through the services' API (as another client would), and sign-in."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.console.conftest import Live
from tests.support import contract_report, wait_for

HIGH_RISK = {"threats_to_kill": True, "strangulation": True, "weapon_used_or_threatened": True,
             "afraid_of_being_killed": True, "violence_escalating": True, "separation_recent_or_planned": True,
             "perpetrator_weapon_access": True, "perpetrator_prior_violence": True}


async def member(live: Live, municipality: str, kind: str, name: str | None = None) -> dict[str, Any]:
    response = await live.stack.referral.post(
        "/v1/members", json={"name": name or f"{kind} {municipality}", "kind": kind, "municipality": municipality},
        headers=live.auth("coordinator", municipality),
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def report(live: Live, municipality: str, **overrides: Any) -> dict[str, Any]:
    response = await live.stack.intake.post(
        "/v1/cases", json=contract_report(municipality, **overrides), headers=live.auth("coordinator", municipality)
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def referral_to(live: Live, municipality: str, case_id: str, member_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        response = await live.stack.referral.get(
            "/v1/referrals", params={"case_id": case_id}, headers=live.auth("coordinator", municipality)
        )
        items = response.json()["items"]
        return next((r for r in items if r["to_member_id"] == member_id), None)

    return await wait_for(probe, timeout=30, interval=0.2, what="the automatic referral")


async def sign_in(page: Any, role: str, municipality: str, *, member_id: str = "", shelter_id: str = "",
                  english: bool = False) -> None:
    """The development sign-in form of CONTRACT §11, by its labels."""
    await page.goto("/login")
    labels = ("Role", "Municipality", "Member ID", "Shelter ID", "Sign in") if english else (
        "Roli", "Bashkia", "ID e anëtarit", "ID e strehës", "Hyr")
    await page.get_by_label(labels[0], exact=True).select_option(role)
    await page.get_by_label(labels[1], exact=True).fill(municipality)
    await page.get_by_label(labels[2], exact=True).fill(member_id)
    await page.get_by_label(labels[3], exact=True).fill(shelter_id)
    await page.get_by_role("button", name=labels[4], exact=True).click()
    await page.wait_for_url(re.compile(r".*/$"))


async def axe_clean(page: Any) -> None:
    """No serious or critical accessibility violation on the page (axe-core, bundled, run offline)."""
    from axe_playwright_python.async_playwright import Axe

    results = await Axe().run(page)
    bad = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in results.response["violations"]
        if v.get("impact") in ("serious", "critical")
    ]
    assert not bad, f"{page.url}: {bad}"


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def http_sign_in(client: httpx.AsyncClient, role: str, municipality: str, **ids: str) -> str:
    """Sign in through the form with a plain HTTP client; returns the CSRF token of the session."""
    page = await client.get("/login")
    csrf = CSRF.search(page.text)
    assert csrf, page.text
    response = await client.post("/login/local", data={"csrf": csrf.group(1), "role": role,
                                                        "municipality": municipality, **ids})
    assert response.status_code == 303, response.text
    home = await client.get("/")
    assert home.status_code == 200, home.text
    token = CSRF.search(home.text)
    assert token
    return token.group(1)
