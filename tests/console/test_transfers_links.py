"""The coordinator's transfers and duplicate decisions in the console (CONTRACT §10–§11), over plain HTTP
against the real stack: the forms reach the API with the signed-in person's own token, refusals are shown
beside their form, and the receiving coordinator sees coded facts, never the identity, until she accepts."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.console.conftest import Live
from tests.console.helpers import axe_clean, http_sign_in, report, sign_in
from tests.support import new_municipality

# A browser on two shared cores: axe takes its time.
pytestmark = pytest.mark.timeout(300)
RECEIVER = "pustec"  # a municipality of the Albanian profile (the destinations the console offers)


async def test_a_coordinator_links_a_duplicate_and_undoes_it(live: Live, http: httpx.AsyncClient) -> None:
    m = new_municipality()
    first = await report(live, m)
    second = await report(live, m)  # the same survivor again: a possible duplicate of the first
    assert first["id"] in [d["id"] for d in second["possible_duplicates"]]
    csrf = await http_sign_in(http, "coordinator", m)
    page = await http.get(f"/cases/{second['id']}")
    assert page.status_code == 200 and "Dublikata të mundshme" in page.text and first["case_number"] in page.text

    bad = await http.post(f"/cases/{second['id']}/links",
                          data={"csrf": csrf, "other_case_id": first["id"], "relation": "maybe"})
    assert bad.status_code == 422 and 'role="alert"' in bad.text
    linked = await http.post(f"/cases/{second['id']}/links",
                             data={"csrf": csrf, "other_case_id": first["id"], "relation": "same_person"})
    assert linked.status_code == 303, linked.text[:2000]
    case = (await live.stack.intake.get(f"/v1/cases/{second['id']}", headers=live.auth("coordinator", m))).json()
    assert case["linked_case_ids"] == [first["id"]] and case["possible_duplicates"] == []
    page = await http.get(f"/cases/{second['id']}")
    assert f'action="/cases/{second["id"]}/links/{first["id"]}/undo"' in page.text

    undone = await http.post(f"/cases/{second['id']}/links/{first['id']}/undo", data={"csrf": csrf})
    assert undone.status_code == 303
    case = (await live.stack.intake.get(f"/v1/cases/{second['id']}", headers=live.auth("coordinator", m))).json()
    assert case["linked_case_ids"] == [] and first["id"] in [d["id"] for d in case["possible_duplicates"]]
    again = await http.post(f"/cases/{second['id']}/links/{first['id']}/undo", data={"csrf": csrf})
    assert again.status_code == 404 and 'role="alert"' in again.text  # nothing left to undo


async def test_a_case_moves_by_the_console_and_the_receiver_sees_no_identity_until_she_accepts(
    live: Live, http: httpx.AsyncClient
) -> None:
    m = new_municipality()
    case = await report(live, m)
    name = (await live.stack.intake.get(f"/v1/cases/{case['id']}", headers=live.auth("coordinator", m))).json()
    last_name = name["survivor"]["last_name"]
    csrf = await http_sign_in(http, "coordinator", m)
    page = await http.get(f"/cases/{case['id']}")
    assert f'<option value="{RECEIVER}">' in page.text and f'<option value="{m}">' not in page.text

    no_consent = await http.post(f"/cases/{case['id']}/transfers",
                                 data={"csrf": csrf, "to_municipality": RECEIVER, "reason": "She moved"})
    assert no_consent.status_code == 422 and 'role="alert"' in no_consent.text
    assert (await http.get("/transfers")).text.count(case["case_number"]) == 0  # nothing was asked
    asked = await http.post(f"/cases/{case['id']}/transfers", data={
        "csrf": csrf, "to_municipality": RECEIVER, "reason": "She moved to her sister", "consent_given_at":
        "2026-12-01T10:00"})
    assert asked.status_code == 303 and asked.headers["location"] == "/transfers"
    listed = await live.stack.intake.get("/v1/transfers", params={"direction": "outgoing"},
                                         headers=live.auth("coordinator", m))
    [transfer_id] = [t["id"] for t in listed.json()["items"] if t["case_id"] == case["id"]]
    outgoing = await http.get("/transfers")
    assert f'id="transfer-{transfer_id}"' in outgoing.text and "Në pritje" in outgoing.text

    async with httpx.AsyncClient(base_url=live.url, timeout=30, follow_redirects=False) as receiver:
        token = await http_sign_in(receiver, "coordinator", RECEIVER)
        incoming = await receiver.get("/transfers")
        assert f'id="transfer-{transfer_id}"' in incoming.text and last_name not in incoming.text
        assert f'action="/transfers/{transfer_id}/accept"' in incoming.text
        refused = await http.post(f"/transfers/{transfer_id}/accept", data={"csrf": csrf})
        assert refused.status_code in (403, 404) and 'role="alert"' in refused.text  # the sender cannot accept
        accepted = await receiver.post(f"/transfers/{transfer_id}/accept", data={"csrf": token})
        assert accepted.status_code == 303 and accepted.headers["location"] == f"/cases/{case['id']}"
        taken = await receiver.get(f"/cases/{case['id']}")
        assert taken.status_code == 200 and last_name in taken.text and case["case_number"] in taken.text
        twice = await receiver.post(f"/transfers/{transfer_id}/accept", data={"csrf": token})
        assert twice.status_code == 409 and 'role="alert"' in twice.text
    gone = await http.get(f"/cases/{case['id']}")
    assert gone.status_code == 404 and last_name not in gone.text


async def test_a_transfer_declined_in_the_console_needs_a_reason(live: Live, http: httpx.AsyncClient) -> None:
    m = new_municipality()
    case = await report(live, m)
    coordinator = live.auth("coordinator", m)
    asked = await live.stack.intake.post(f"/v1/cases/{case['id']}/transfers", headers=coordinator, json={
        "to_municipality": RECEIVER, "reason": "moved", "consent_given_at": "2026-12-01T10:00:00+01:00"})
    assert asked.status_code == 201, asked.text
    transfer_id = asked.json()["id"]
    token = await http_sign_in(http, "coordinator", RECEIVER)
    unknown = await http.post(f"/transfers/{uuid.uuid4()}/decline", data={"csrf": token, "reason": "x"})
    assert unknown.status_code == 404
    empty = await http.post(f"/transfers/{transfer_id}/decline", data={"csrf": token, "reason": " "})
    assert empty.status_code == 422 and 'role="alert"' in empty.text
    declined = await http.post(f"/transfers/{transfer_id}/decline", data={"csrf": token, "reason": "No place here"})
    assert declined.status_code == 303
    listed = await live.stack.intake.get("/v1/transfers", params={"direction": "outgoing"}, headers=coordinator)
    [mine] = [t for t in listed.json()["items"] if t["id"] == transfer_id]
    assert mine["status"] == "declined"


async def test_the_pages_in_a_browser_are_accessible(live: Live, page_factory: Any) -> None:
    m = new_municipality()
    first = await report(live, m)
    second = await report(live, m)
    page = await page_factory()
    await sign_in(page, "coordinator", m)
    await page.goto(f"/cases/{second['id']}")
    await page.get_by_role("heading", name="Dublikata të mundshme").wait_for()
    await axe_clean(page)
    await page.get_by_role("button", name=f"I njëjti person: {first['case_number']}", exact=True).click()
    await page.get_by_role("link", name="Rast i lidhur 1").wait_for()

    await page.get_by_text("Mbijetuesja u zhvendos ose iku").click()
    await page.get_by_label("Te bashkia").select_option(RECEIVER)
    await page.get_by_label("Arsyeja").fill("She moved to her sister")
    await page.get_by_role("button", name="Kërko transferimin").click()
    await page.wait_for_url("**/transfers")
    await page.get_by_role("cell", name=second["case_number"], exact=True).wait_for()
    await axe_clean(page)
