"""The console's other role tasks in a real browser against the real stack: a shelter starts and ends a
placement on a phone (and its live alert leads to a page it can open), an institution completes its plan
action, the housing office sets a year's budget and sees what remains when deciding, the coordinator edits
the routing rules and cancels a referral on the case page, and a page in Serbian. axe on every page."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import pytest

from tests.console.conftest import Live
from tests.console.helpers import (
    axe_clean,
    member,
    notifications_know_shelter,
    referral_to,
    register_shelter,
    report,
    sign_in,
)
from tests.support import new_municipality, wait_for

pytestmark = pytest.mark.timeout(300)
PHONE = {"width": 390, "height": 844}


async def _fits_a_phone(page: Any) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} is {width}px wide on a 390px phone"


async def _saved(page: Any, notice: str) -> None:
    """The notice, or the page's error shown in the failure (a refusal of the API is a readable message)."""
    await page.get_by_text(notice).or_(page.locator(".error")).first.wait_for()
    assert not await page.locator(".error").count(), await page.locator(".error").inner_text()


async def test_shelter_starts_and_ends_a_placement_on_a_phone_from_its_alert(live: Live, page_factory: Any) -> None:
    m = new_municipality()
    shelter_member = await member(live, m, "shelter")
    shelter = await register_shelter(live, m, shelter_member["id"], capacity=8)
    await notifications_know_shelter(live, shelter["id"])
    page = await page_factory(locale="en-US", viewport=PHONE)
    await sign_in(page, "shelter_staff", m, shelter_id=shelter["id"], english=True)
    await page.locator("body[data-live='ready']").wait_for(timeout=15000)
    await page.wait_for_timeout(500)

    case = await report(live, m)  # needs `shelter`: routed to the shelter's member automatically
    await referral_to(live, m, case["id"], shelter_member["id"])
    alert = page.locator("#live-alerts a", has_text=case["case_number"]).first
    await alert.wait_for(timeout=30000)
    # Shelter staff never read intake records: the alert leads to the shelter's own view of the case.
    assert await alert.get_attribute("href") == f"/shelter/cases/{case['id']}"
    await alert.click()
    await page.wait_for_url(f"**/shelter/cases/{case['id']}")
    await page.get_by_role("heading", name=f"Case {case['case_number']}").wait_for()
    assert "Ermira" not in await page.content()
    await axe_clean(page)
    await _fits_a_phone(page)

    until = (date.today() + timedelta(days=21)).isoformat()
    await page.get_by_label("Referred case").select_option(case["id"])
    await page.get_by_label("Adults", exact=True).fill("1")
    await page.get_by_label("Children", exact=True).fill("2")
    await page.get_by_label("Planned until").fill(until)
    await page.get_by_role("button", name="Start placement").click()
    await page.wait_for_url(f"**/shelter/cases/{case['id']}")
    await page.get_by_label("Reason for ending").wait_for()
    placements = await live.stack.shelter.get("/v1/placements", params={"case_id": case["id"]},
                                              headers=live.auth("coordinator", m))
    (placement,) = placements.json()["items"] if isinstance(placements.json(), dict) else placements.json()
    assert (placement["adults"], placement["children"], placement["planned_until"]) == (1, 2, until)
    beds = await live.stack.shelter.get(f"/v1/shelters/{shelter['id']}", headers=live.auth("coordinator", m))
    assert beds.json()["free_beds"] == 5

    await page.goto("/")
    card = page.locator(f"#placement-{placement['id']}")
    await card.get_by_text(case["case_number"]).wait_for()
    await axe_clean(page)
    await _fits_a_phone(page)
    await card.get_by_label("Reason for ending").fill("moved to a relative")
    await card.get_by_role("button", name="End placement").click()
    await page.wait_for_url(re.compile(r".*/$"))
    assert await page.locator(f"#placement-{placement['id']}").count() == 0
    ended = await live.stack.shelter.get("/v1/placements", params={"case_id": case["id"]},
                                         headers=live.auth("coordinator", m))
    items = ended.json()["items"] if isinstance(ended.json(), dict) else ended.json()
    assert items[0]["ended_at"] is not None
    beds = await live.stack.shelter.get(f"/v1/shelters/{shelter['id']}", headers=live.auth("coordinator", m))
    assert beds.json()["free_beds"] == 8


async def test_institution_lists_and_completes_its_plan_actions(live: Live, page_factory: Any) -> None:
    m = new_municipality()
    social = await member(live, m, "social_services")
    case = await report(live, m)
    await referral_to(live, m, case["id"], social["id"])
    coordinator = live.auth("coordinator", m)
    meeting = await live.stack.referral.post("/v1/etn-meetings", headers=coordinator, json={
        "municipality": m, "scheduled_for": "2026-11-25T10:00:00+01:00", "case_ids": [case["id"]],
        "member_ids": [social["id"]]})
    assert meeting.status_code == 201, meeting.text
    minutes = await live.stack.referral.post(f"/v1/etn-meetings/{meeting.json()['id']}/minutes", headers=coordinator,
                                             json={"attended_member_ids": [social["id"]], "decisions": [{
                                                 "case_id": case["id"], "action": "home visit",
                                                 "responsible_member_id": social["id"], "due_date": "2026-12-20"}]})
    assert minutes.status_code == 201, minutes.text
    (action,) = minutes.json()["actions"]

    page = await page_factory(locale="en-GB")
    await sign_in(page, "social_services", m, member_id=social["id"], english=True)
    await page.get_by_role("navigation").get_by_role("link", name="Plan actions").click()
    card = page.locator(f"#action-{action['id']}")
    await card.get_by_text("home visit").wait_for()
    await axe_clean(page)
    await card.get_by_role("button", name=f"Mark as done {case['case_number']}").click()
    await page.get_by_text("The action is marked as done.").wait_for()
    assert await card.get_by_role("button").count() == 0
    await card.get_by_text("Completed").wait_for()
    plan = await live.stack.referral.get(f"/v1/cases/{case['id']}/plan", headers=coordinator)
    assert [a["status"] for a in plan.json()["actions"]] == ["completed"]


async def test_housing_office_sets_budgets_per_year_and_decides_with_the_remainder_in_view(
    live: Live, page_factory: Any
) -> None:
    m = new_municipality()
    year = date.today().year
    case = await report(live, m)
    page = await page_factory(locale="en-GB")
    await sign_in(page, "housing_officer", m, english=True)
    await page.get_by_role("navigation").get_by_role("link", name="Budgets").click()
    await page.get_by_role("heading", name="Rent-bonus budgets").wait_for()
    assert "No budget is set for this year." in await page.locator(f"#budget-{year}").inner_text()
    await axe_clean(page)
    await page.get_by_label("Amount (ALL)").fill("250000")
    await page.get_by_role("button", name="Save the budget").click()
    await _saved(page, "The budget is saved.")
    assert "250,000 ALL" in await page.locator(f"#budget-{year}").inner_text()
    stored = await live.stack.shelter.get(f"/v1/rent-bonus/budgets/{m}/{year}",
                                          headers=live.auth("housing_officer", m))
    assert stored.status_code == 200 and float(stored.json()["amount"]) == 250000

    # Another year, chosen on the page.
    await page.get_by_label("Year", exact=True).fill(str(year + 1))
    await page.get_by_role("button", name="Show").click()
    await page.get_by_role("heading", name=f"Set the budget {year + 1}").wait_for()
    await page.get_by_label("Amount (ALL)").fill("90000")
    await page.get_by_role("button", name="Save the budget").click()
    await _saved(page, "The budget is saved.")
    assert "90,000 ALL" in await page.locator(f"#budget-{year + 1}").inner_text()

    async def apply() -> Any:
        response = await live.stack.shelter.post("/v1/rent-bonus/applications", headers=live.auth("coordinator", m),
                                                 json={"case_id": case["id"], "municipality": m,
                                                       "monthly_rent": "20000", "household_size": 2,
                                                       "requested_months": 2})
        return response.json() if response.status_code == 201 else None

    application = await wait_for(apply, timeout=30, interval=0.3, what="the application (case known to shelter)")
    await page.goto("/")
    form = page.locator(f"form[action='/rent-bonus/applications/{application['id']}/decision']")
    assert f"Remaining budget {year}: 250,000 ALL" in await form.inner_text()
    await axe_clean(page)


async def test_coordinator_edits_routing_rules_and_cancels_a_referral(live: Live, page_factory: Any) -> None:
    m = new_municipality()
    social = await member(live, m, "social_services", "Shërbimi Social i Testit")
    case = await report(live, m)
    referral = await referral_to(live, m, case["id"], social["id"])
    coordinator = live.auth("coordinator", m)
    defaults = (await live.stack.referral.get("/v1/routing-rules", headers=coordinator)).json()
    assert defaults["is_default"]
    page = await page_factory(locale="en-GB")
    await sign_in(page, "coordinator", m, english=True)
    await page.get_by_role("navigation").get_by_role("link", name="Routing rules").click()
    await page.get_by_role("heading", name="Routing rules", exact=True).wait_for()
    await axe_clean(page)

    new = page.locator("section[aria-labelledby='new-rule-title']")
    await new.get_by_label("Rule name").fill("housing_ngo")
    await new.get_by_label("Refer to").select_option("ngo")
    await new.get_by_label("Urgency", exact=True).select_option("normal")
    await new.get_by_label("Conditions", exact=True).fill("not json")
    await new.get_by_role("button", name="Add the rule").click()
    await page.get_by_text("The conditions must be a JSON list").wait_for()
    assert (await live.stack.referral.get("/v1/routing-rules", headers=coordinator)).json()["is_default"]

    new = page.locator("section[aria-labelledby='new-rule-title']")
    await new.get_by_label("Rule name").fill("housing_ngo")
    await new.get_by_label("Refer to").select_option("ngo")
    await new.get_by_label("Conditions", exact=True).fill('[{"needs_any": ["housing"]}]')
    await new.get_by_role("button", name="Add the rule").click()
    await page.get_by_text("The rule is saved.").wait_for()
    table = (await live.stack.referral.get("/v1/routing-rules", headers=coordinator)).json()
    assert not table["is_default"] and len(table["rules"]) == len(defaults["rules"]) + 1
    added = table["rules"][-1]
    assert (added["name"], added["refer_to"], added["when"][0]["needs_any"]) == ("housing_ngo", "ngo", ["housing"])

    rule = page.locator("section.card", has=page.get_by_role("heading", name=re.compile("housing_ngo")))
    await rule.get_by_label("Urgency", exact=True).select_option("high")
    # The page already says "The rule is saved." (the add before, same URL after the redirect): wait for the
    # save's own navigation, else the notice of the add is taken for it and the API read races the POST.
    async with page.expect_navigation():
        await rule.get_by_role("button", name="Save the rule").click()
    await page.get_by_text("The rule is saved.").wait_for()
    table = (await live.stack.referral.get("/v1/routing-rules", headers=coordinator)).json()
    assert table["rules"][-1]["urgency"] == "high" and len(table["rules"]) == len(defaults["rules"]) + 1

    await page.get_by_role("button", name="Stop using the rule housing_ngo").click()
    await page.get_by_text("The rule is no longer used.").wait_for()
    table = (await live.stack.referral.get("/v1/routing-rules", headers=coordinator)).json()
    assert [r["name"] for r in table["rules"]] == [r["name"] for r in defaults["rules"]]

    await page.goto(f"/cases/{case['id']}")
    row = page.locator(f"#case-referral-{referral['id']}")
    await axe_clean(page)
    await row.get_by_role("button", name="Cancel the referral: Shërbimi Social i Testit").click()
    await page.wait_for_url(f"**/cases/{case['id']}")
    await page.locator(f"#case-referral-{referral['id']}").get_by_role("cell", name="Cancelled", exact=True).wait_for()
    assert await page.locator(f"#case-referral-{referral['id']}").get_by_role("button").count() == 0
    stored = await live.stack.referral.get(f"/v1/referrals/{referral['id']}", headers=coordinator)
    assert stored.json()["status"] == "cancelled"


async def test_the_console_in_serbian(live: Live, page_factory: Any) -> None:
    m = new_municipality()
    page = await page_factory(locale="sr-Latn-RS")
    await page.goto("/login")
    await page.get_by_role("heading", name="Prijavi se", exact=True).wait_for()
    assert await page.locator("html").get_attribute("lang") == "sr-Latn"
    await axe_clean(page)
    await sign_in(page, "coordinator", m, language="sr")
    await page.get_by_role("heading", name="Kontrolna tabla", exact=True).wait_for()
    await page.get_by_role("navigation").get_by_role("link", name="Slučajevi").wait_for()
    await axe_clean(page)
    # The switch offers the other two languages; Albanian stays the default for everyone else.
    await page.get_by_role("button", name="Shqip").click()
    await page.get_by_role("heading", name="Paneli", exact=True).wait_for()
    await page.get_by_role("button", name="Srpski").click()
    await page.get_by_role("heading", name="Kontrolna tabla", exact=True).wait_for()
