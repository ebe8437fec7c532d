"""The console in a real browser (Debian's Chromium) against the real stack: each role signs in and does its
main task end to end, live alerts arrive without a reload, axe finds no serious or critical violation on
any page, the shelter page fits a phone, and each role's home is photographed (into docs/console/ only under
`make screenshots`, else into a temporary folder: the `screenshots` fixture)."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.console.conftest import Live
from tests.console.helpers import HIGH_RISK, axe_clean, member, referral_to, report, sign_in
from tests.support import new_municipality, wait_for

# A browser on two shared cores: axe on many pages takes its time.
pytestmark = pytest.mark.timeout(300)


async def _shot(page: Any, folder: Path, name: str) -> None:
    path = folder / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0


async def test_coordinator_dashboard_search_case_page_referral_reports(
    live: Live, page_factory: Any, screenshots: Path
) -> None:
    m = new_municipality()
    social = await member(live, m, "social_services", "Shërbimi Social i Testit")
    police = await member(live, m, "police", "Komisariati i Testit")
    case = await report(live, m, risk_answers=HIGH_RISK)
    await referral_to(live, m, case["id"], social["id"])
    page = await page_factory()
    await sign_in(page, "coordinator", m)
    await page.get_by_role("heading", name="Paneli", exact=True).wait_for()
    high = page.get_by_role("link", name=re.compile(r"^1 I lartë"))
    assert await high.count() == 1
    await axe_clean(page)
    await _shot(page, screenshots, "coordinator")

    await page.get_by_role("navigation").get_by_role("link", name="Rastet").click()
    await page.get_by_label("Emri ose numri i rastit").fill("Ermira Hoxa")  # accent- and typo-tolerant
    await page.get_by_role("button", name="Kërko").click()
    await page.get_by_role("link", name=case["case_number"]).wait_for()
    assert "Ermira" not in page.url and "Hoxa" not in page.url
    await axe_clean(page)
    await page.get_by_role("link", name=case["case_number"]).click()
    await page.wait_for_url(f"**/cases/{case['id']}")
    await page.get_by_text("Ermira Hoxha").wait_for()
    await axe_clean(page)

    # A manual referral to the police (in the survivor's consent).
    await page.get_by_label("Për anëtarin").select_option(police["id"])
    await page.get_by_label("Shënim").fill("invented note")
    await page.get_by_role("button", name="Refero").click()
    await page.wait_for_url(f"**/cases/{case['id']}")
    await page.get_by_role("cell", name="Komisariati i Testit", exact=True).wait_for()

    await page.goto("/reports")
    assert await page.locator("svg.chart").count() >= 5
    await axe_clean(page)
    csv = await page.context.request.get(f"/reports/cases.csv?from={date.today().year}-01-01&to={date.today()}")
    assert csv.status == 200 and case["case_number"] in await csv.text()
    for path in ("/meetings", "/directory", "/inbox", "/rent-bonus"):
        await page.goto(path)
        await axe_clean(page)


async def test_institution_queue_acknowledge_accept_complete_and_report_a_case(
    live: Live, page_factory: Any, screenshots: Path
) -> None:
    m = new_municipality()
    social = await member(live, m, "social_services")
    case = await report(live, m)
    referral = await referral_to(live, m, case["id"], social["id"])
    page = await page_factory(locale="en-GB")
    await sign_in(page, "social_services", m, member_id=social["id"], english=True)
    card = page.locator(f"#referral-{referral['id']}")
    await card.get_by_text(case["case_number"]).wait_for()
    await axe_clean(page)
    await _shot(page, screenshots, "institution")
    await card.get_by_role("button", name="Acknowledge").click()
    await card.get_by_text("Acknowledged").first.wait_for()
    await card.get_by_role("button", name="Accept").click()
    await card.get_by_label("Outcome").fill("counselling given")
    await card.get_by_role("button", name="Complete").click()
    await card.get_by_text("Completed").first.wait_for()
    stored = await live.stack.referral.get(f"/v1/referrals/{referral['id']}", headers=live.auth("coordinator", m))
    assert stored.json()["status"] == "completed"
    assert [h["status"] for h in stored.json()["history"]][-3:] == ["acknowledged", "accepted", "completed"]

    await page.get_by_role("link", name="Report a case").first.click()
    await page.get_by_label("First name").fill("Valbona")
    await page.get_by_label("Last name").fill("Dervishi")
    await page.get_by_label("Age (when the date of birth is not known)").fill("41")
    await page.get_by_label("When it happened").fill("2026-11-29T18:00")
    await page.get_by_label("Physical").check()
    await page.get_by_label("Has he threatened to kill you?").check()
    await page.get_by_label("Social services").last.check()
    await axe_clean(page)
    await page.get_by_role("button", name="Report the case").click()
    await page.wait_for_url(re.compile(r".*/cases/[0-9a-f-]{36}$"))
    await page.get_by_text("Valbona Dervishi").wait_for()
    await axe_clean(page)


async def test_shelter_free_beds_on_a_phone_and_a_concurrent_change_is_shown(
    live: Live, page_factory: Any, screenshots: Path
) -> None:
    m = new_municipality()
    shelter_member = await member(live, m, "shelter")
    body = {"name": "Streha e Testit", "operator": "Invented NGO", "kind": "emergency", "municipality": m,
            "capacity": 8, "accepts_children": True, "address": "Rruga 1", "phone": "+355690000002",
            "member_id": shelter_member["id"]}
    attempts: list[httpx.Response] = []

    async def registered() -> bool:
        # The shelter service learns of the member from `member.saved` a moment later (a 422 until then,
        # which stores nothing, so asking again is safe).
        attempts.append(await live.stack.shelter.post("/v1/shelters", headers=live.auth("coordinator", m), json=body))
        return attempts[-1].status_code != 422

    await wait_for(registered, timeout=30, what="the shelter service to know the new shelter member")
    created = attempts[-1]
    assert created.status_code == 201, created.text
    shelter = created.json()
    page = await page_factory(locale="en-US", viewport={"width": 390, "height": 844})
    await sign_in(page, "shelter_staff", m, shelter_id=shelter["id"], english=True)
    beds = page.get_by_label("Free beds", exact=True)
    await beds.fill("3")
    await page.get_by_role("button", name="Save", exact=True).click()
    await page.get_by_text("Saved.").wait_for()
    current = await live.stack.shelter.get(f"/v1/shelters/{shelter['id']}", headers=live.auth("coordinator", m))
    assert current.json()["free_beds"] == 3
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width}px wide on a 390px phone"
    await axe_clean(page)
    await _shot(page, screenshots, "shelter")

    # Someone else changes the beds while this page is open: saving shows theirs, overwrites nothing.
    other = await live.stack.shelter.put(
        f"/v1/shelters/{shelter['id']}/availability", json={"free_beds": 1},
        headers={**live.auth("coordinator", m), "If-Match": current.headers["etag"]},
    )
    assert other.status_code == 200, other.text
    await beds.fill("5")
    await page.get_by_role("button", name="Save", exact=True).click()
    await page.get_by_text("Someone else changed the free beds meanwhile").wait_for()
    assert await page.get_by_label("Free beds", exact=True).input_value() == "1"
    after = await live.stack.shelter.get(f"/v1/shelters/{shelter['id']}", headers=live.auth("coordinator", m))
    assert after.json()["free_beds"] == 1


async def test_housing_office_decides_and_pays(live: Live, page_factory: Any, screenshots: Path) -> None:
    m = new_municipality()
    case = await report(live, m)
    year = date.today().year
    for budget_year in (year, year + 1):  # two months from December run into the next year
        budget = await live.stack.shelter.put(f"/v1/rent-bonus/budgets/{m}/{budget_year}",
                                              json={"amount": "100000"}, headers=live.auth("housing_officer", m))
        assert budget.status_code == 200, budget.text

    async def apply() -> Any:
        response = await live.stack.shelter.post("/v1/rent-bonus/applications", headers=live.auth("coordinator", m),
                                                 json={"case_id": case["id"], "municipality": m,
                                                       "monthly_rent": "20000", "household_size": 2,
                                                       "requested_months": 2})
        return response.json() if response.status_code == 201 else None

    application = await wait_for(apply, timeout=30, interval=0.3, what="the application (case known to shelter)")
    page = await page_factory()
    await sign_in(page, "housing_officer", m)
    await page.get_by_role("heading", name="Bonusi i qirasë", exact=True).wait_for()
    await axe_clean(page)
    await _shot(page, screenshots, "housing")
    form = page.locator(f"form[action='/rent-bonus/applications/{application['id']}/decision']")
    await form.get_by_label("Shuma mujore").fill("15000")
    await form.get_by_label("Muaj", exact=True).fill("2")
    await form.get_by_role("button", name="Mirato").click()
    await page.get_by_text("Vendimi u regjistrua.").or_(page.locator(".error")).first.wait_for()
    assert not await page.locator(".error").count(), await page.locator(".error").inner_text()
    pay_buttons = page.get_by_role("button", name=re.compile(rf"^Paguaj {case['case_number']}"))
    assert await pay_buttons.count() == 2
    await pay_buttons.first.click()
    await page.get_by_text("Pagesa u regjistrua si e paguar.").wait_for()
    assert await page.get_by_role("button", name=re.compile(rf"^Paguaj {case['case_number']}")).count() == 1
    await axe_clean(page)
    stored = await live.stack.shelter.get(f"/v1/rent-bonus/applications/{application['id']}",
                                          headers=live.auth("housing_officer", m))
    assert sorted(p["status"] for p in stored.json()["payments"]) == ["due", "paid"]


async def test_a_live_alert_arrives_without_a_reload_and_links_to_its_case(live: Live, page_factory: Any) -> None:
    m = new_municipality()
    page = await page_factory()
    await sign_in(page, "coordinator", m)
    await page.locator("body[data-live='ready']").wait_for(timeout=15000)
    await page.wait_for_timeout(500)
    case = await report(live, m, risk_answers=HIGH_RISK)
    alert = page.locator("#live-alerts a", has_text=case["case_number"]).first
    await alert.wait_for(timeout=30000)
    assert await alert.get_attribute("href") == f"/cases/{case['id']}"
    await alert.click()
    await page.wait_for_url(f"**/cases/{case['id']}")


async def test_openid_connect_sign_in_with_pkce(live: Live, page_factory: Any) -> None:
    m = new_municipality()
    live.provider.next_claims = {"sub": "oidc-coordinator", "role": "coordinator", "municipality": m}
    page = await page_factory(locale="en")
    await page.goto("/login")
    await axe_clean(page)
    await page.get_by_role("link", name="Sign in with the municipality's account").click()
    await page.get_by_role("heading", name="Dashboard", exact=True).wait_for()
    request = live.provider.token_requests[-1]
    assert request["grant_type"] == "authorization_code" and len(request["code_verifier"]) >= 43
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert cookies["mkr_session"]["httpOnly"] and cookies["mkr_session"]["sameSite"] == "Strict"
    await page.get_by_role("button", name="Sign out").click()
    await page.get_by_role("heading", name="Sign in", exact=True).wait_for()
    await page.goto("/")
    await page.wait_for_url("**/login")
