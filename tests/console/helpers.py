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


SIGN_IN_LABELS = {
    "en": ("Role", "Municipality", "Member ID", "Shelter ID", "Sign in"),
    "sq": ("Roli", "Bashkia", "ID e anëtarit", "ID e strehës", "Hyr"),
    "sr": ("Uloga", "Opština", "ID člana", "ID skloništa", "Prijavi se"),
}


async def sign_in(page: Any, role: str, municipality: str, *, member_id: str = "", shelter_id: str = "",
                  english: bool = False, language: str | None = None) -> None:
    """The development sign-in form of CONTRACT §11, by its labels (in the page's language)."""
    await page.goto("/login")
    labels = SIGN_IN_LABELS[language or ("en" if english else "sq")]
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


async def register_shelter(live: Live, municipality: str, member_id: str, capacity: int = 8) -> dict[str, Any]:
    """A shelter of the directory's shelter member (the shelter service learns of the member a moment later:
    a 422 until then, which stores nothing, so asking again is safe)."""
    body = {"name": "Streha e Testit", "operator": "Invented NGO", "kind": "emergency", "municipality": municipality,
            "capacity": capacity, "accepts_children": True, "address": "Rruga 1", "phone": "+355690000002",
            "member_id": member_id}
    attempts: list[httpx.Response] = []

    async def registered() -> bool:
        attempts.append(await live.stack.shelter.post("/v1/shelters", headers=live.auth("coordinator", municipality),
                                                      json=body))
        return attempts[-1].status_code != 422

    await wait_for(registered, timeout=30, what="the shelter service to know the new shelter member")
    assert attempts[-1].status_code == 201, attempts[-1].text
    return dict(attempts[-1].json())


async def notifications_know_shelter(live: Live, shelter_id: str) -> None:
    """Wait until the notifications service has the shelter's member in its projection, so that an alert
    about a referral to that member reaches the shelter's staff."""
    import sqlalchemy as sa

    engine = live.stack.apps["notifications"].state.runtime.engine

    async def known() -> bool:
        async with engine.connect() as conn:
            found = await conn.scalar(sa.text("SELECT member_id FROM shelter_free_beds WHERE shelter_id = :s"),
                                      {"s": shelter_id})
        return found is not None

    await wait_for(known, timeout=30, interval=0.2, what="the notifications service to know the shelter")
