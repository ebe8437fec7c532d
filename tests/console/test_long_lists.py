"""Lists longer than one page of the API: the console follows `next_cursor` where a page needs the whole
list, so an institution's newest referral and a form's last member are never cut off by the first page
(the API lists referrals and members oldest first). The page size is made 2 here so that three items
already span two pages."""

from __future__ import annotations

import httpx
import pytest

from services.console.views import common
from tests.console.conftest import Live
from tests.console.helpers import http_sign_in, member, referral_to, report
from tests.support import new_municipality


@pytest.fixture
def pages_of_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "LIST_LIMIT", 2)


async def test_the_queue_shows_every_open_referral_beyond_the_first_page(
    live: Live, http: httpx.AsyncClient, pages_of_two: None
) -> None:
    m = new_municipality()
    social = await member(live, m, "social_services")
    cases = [await report(live, m) for _ in range(3)]
    for case in cases:
        await referral_to(live, m, case["id"], social["id"])
    await http_sign_in(http, "social_services", m, member_id=social["id"])
    queue = await http.get("/")
    assert queue.status_code == 200
    assert [case["case_number"] in queue.text for case in cases] == [True, True, True]


async def test_the_case_page_offers_every_member(live: Live, http: httpx.AsyncClient, pages_of_two: None) -> None:
    m = new_municipality()
    members = [await member(live, m, "ngo", f"Shoqata {i}") for i in range(5)]
    case = await report(live, m)
    await http_sign_in(http, "coordinator", m)
    page = await http.get(f"/cases/{case['id']}")
    assert page.status_code == 200
    assert [f'<option value="{x["id"]}">' in page.text for x in members] == [True] * 5
    directory = await http.get("/directory")
    assert all(f"Shoqata {i}" in directory.text for i in range(5))
