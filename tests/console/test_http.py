"""The console over plain HTTP against the real stack: sign-in, session, CSRF, headers, no personal data in
URLs or logs, the idempotent report form, texts and /docs offline."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from services.console import pages
from services.console.i18n import catalogue
from services.console.main import create_app
from tests.console.conftest import Live
from tests.console.helpers import CSRF, http_sign_in, member, referral_to, report
from tests.support import new_municipality

TEMPLATES = Path(__file__).resolve().parents[2] / "services" / "console" / "templates"


async def test_login_form_is_albanian_by_default_and_english_on_request(http: httpx.AsyncClient) -> None:
    albanian = await http.get("/login")
    assert albanian.status_code == 200
    for label in ("Roli", "Bashkia", "ID e anëtarit", "ID e strehës"):
        assert f">{label}</label>" in albanian.text
    assert '<html lang="sq">' in albanian.text
    english = await http.get("/login", headers={"Accept-Language": "en-GB,en;q=0.9,sq;q=0.5"})
    for label in ("Role", "Municipality", "Member ID", "Shelter ID"):
        assert f">{label}</label>" in english.text
    assert '<button type="submit">Sign in</button>' in english.text
    # The switch beats the browser's choice.
    csrf = CSRF.search(english.text)
    assert csrf
    switched = await http.post("/language", data={"csrf": csrf.group(1), "lang": "sq", "back": "/login"},
                               headers={"Accept-Language": "en"})
    assert switched.status_code == 303
    again = await http.get("/login", headers={"Accept-Language": "en"})
    assert ">Roli</label>" in again.text


async def test_session_cookie_is_httponly_strict_and_lives_as_long_as_the_token(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url) as client:
        page = await client.get("/login")
        csrf = CSRF.search(page.text)
        assert csrf
        response = await client.post("/login/local", data={"csrf": csrf.group(1), "role": "coordinator",
                                                            "municipality": "elbasan"})
        assert response.status_code == 303 and response.headers["location"] == "/"
        cookie = response.headers["set-cookie"]
        assert "mkr_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "Secure" not in cookie  # development only; see the test below
        max_age = int(re.search(r"Max-Age=(\d+)", cookie).group(1))  # type: ignore[union-attr]
        assert abs(max_age - live.console.state.local_token_ttl) <= 5
        home = await client.get("/")
        assert home.status_code == 200 and "Paneli" in home.text
        # Sign-out ends the session.
        token = CSRF.search(home.text)
        assert token
        out = await client.post("/logout", data={"csrf": token.group(1)})
        assert out.status_code == 303 and out.headers["location"] == "/login"
        after = await client.get("/")
        assert after.status_code == 303 and after.headers["location"] == "/login"


async def test_outside_development_no_local_sign_in_and_cookies_are_secure(live: Live) -> None:
    settings = live.settings.model_copy(update={"environment": "test"})
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console.test") as client:
        page = await client.get("/login")
        assert page.status_code == 200
        assert 'action="/login/local"' not in page.text and 'href="/auth/oidc"' in page.text
        assert "Secure" in page.headers["set-cookie"]
        csrf = CSRF.search(page.text)
        assert csrf
        refused = await client.post("/login/local", data={"csrf": csrf.group(1), "role": "coordinator",
                                                           "municipality": "elbasan"})
        assert refused.status_code == 404
        assert "mkr_session" not in refused.headers.get("set-cookie", "")


async def test_every_form_post_without_its_csrf_token_is_403(live: Live, http: httpx.AsyncClient) -> None:
    await http_sign_in(http, "coordinator", new_municipality())
    posts = [r for r in pages.router.routes if isinstance(r, Route) and "POST" in (r.methods or set())]
    assert len(posts) >= 12
    for route in posts:
        path = re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000000", route.path)
        path = path.replace("00000000-0000-0000-0000-000000000000/00000000-0000-0000-0000-000000000000",
                            "00000000-0000-0000-0000-000000000000/accept")
        missing = await http.post(path, data={"reason": "x"})
        assert missing.status_code == 403, (route.path, missing.status_code)
        wrong = await http.post(path, data={"csrf": "not-the-token"})
        assert wrong.status_code == 403, route.path


async def test_pages_carry_csp_without_inline_script_no_store_and_nothing_from_another_host(
    live: Live, http: httpx.AsyncClient
) -> None:
    m = new_municipality()
    await http_sign_in(http, "coordinator", m)
    case = await report(live, m)
    for path in ("/", "/cases", f"/cases/{case['id']}", "/reports", "/meetings", "/directory", "/inbox",
                 "/rent-bonus", "/rent-bonus/budgets", "/routing-rules", "/login"):
        response = await http.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "default-src 'self'" in csp
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"
        html = response.text
        assert "<script>" not in html and not re.search(r"<script(?![^>]*\bsrc=\"/)", html), path
        assert not re.search(r"\bon[a-z]+=\"", html), f"inline handler on {path}"
        assert not re.search(r"(src|href|action)=\"(https?:)?//", html), f"another host on {path}"
        assert 'style="' not in html
    static = await http.get("/static/console.js")
    assert static.status_code == 200 and "no-store" not in static.headers.get("cache-control", "")


async def test_a_search_by_name_never_puts_the_name_in_a_url_or_a_log(
    live: Live, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    m = new_municipality()
    case = await report(live, m, survivor={"first_name": "Drita", "last_name": "Kelmendi", "sex": "female",
                                           "age": 33})
    csrf = await http_sign_in(http, "coordinator", m)
    with caplog.at_level(logging.DEBUG):
        found = await http.post("/cases", data={"csrf": csrf, "q": "Drita Kelmendy"})  # a typo
        assert found.status_code == 200
        assert case["case_number"] in found.text
        page = await http.get(f"/cases/{case['id']}")
        assert "Kelmendi" in page.text and page.headers["cache-control"] == "no-store"
    links = re.findall(r"(?:href|action|src)=\"([^\"]+)\"", found.text + page.text)
    assert links and not [link for link in links if "Drita" in link or "Kelmendi" in link]
    # The project's own log lines (httpx's and uvicorn's access lines, which would quote the API's `q`, are
    # silenced by shared.observability.configure_logging in every served process).
    leaking = [(r.name, r.getMessage()) for r in caplog.records if r.name.startswith("mkr")
               and ("Kelmendi" in f"{r.getMessage()} {r.__dict__}" or "Drita" in f"{r.getMessage()} {r.__dict__}")]
    assert not leaking, leaking


async def test_the_report_form_twice_with_its_key_makes_one_case(live: Live, http: httpx.AsyncClient) -> None:
    m = new_municipality()
    social = await member(live, m, "social_services")
    await http_sign_in(http, "social_services", m, member_id=social["id"])
    form = await http.get("/report")
    assert form.status_code == 200
    key = re.search(r'name="form_key" value="([^"]+)"', form.text)
    csrf = CSRF.search(form.text)
    assert key and csrf
    questions = re.findall(r'name="(risk_[a-z0-9_]+)"', form.text)
    assert "risk_threats_to_kill" in questions and len(questions) >= 10
    data = {
        "csrf": csrf.group(1), "form_key": key.group(1), "source": "social_services", "first_name": "Lule",
        "last_name": "Gashi", "sex": "female", "age": "29", "ethnicity": "egyptian", "phone": "+355691111111",
        "address": "Rruga e Provës 3", "child_0_sex": "female", "child_0_age": "4", "occurred_at": "2026-11-30T20:15",
        "violence_types": ["physical", "economic"], "perpetrator_relationship": "partner",
        "description": "invented", "needs": ["shelter"], "risk_threats_to_kill": "yes",
        "share_with": ["social_services", "police"], "consent_given_at": "2026-11-30T21:00",
    }
    first = await http.post("/report", data=data)
    second = await http.post("/report", data=data)  # a double click, or the browser resubmitting
    assert first.status_code == 303, first.text[:2000]
    assert second.status_code == 303 and second.headers["location"] == first.headers["location"]
    case_id = first.headers["location"].rsplit("/", 1)[1]
    listing = await live.stack.intake.get("/v1/cases", params={"q": "Lule Gashi"},
                                          headers=live.auth("coordinator", m))
    assert [c["id"] for c in listing.json()["items"]] == [case_id]
    stored = (await live.stack.intake.get(f"/v1/cases/{case_id}", headers=live.auth("coordinator", m))).json()
    assert stored["survivor"]["ethnicity"] == "egyptian" and stored["children"] == [{"sex": "female", "age": 4}]
    assert stored["incident"]["occurred_at"].startswith("2026-11-30T")
    assert sorted(stored["consent"]["share_with"]) == ["police", "social_services"]
    # A refused form shows the service's reasons in words and keeps what was typed.
    bad = await http.post("/report", data={**data, "form_key": "other-key", "age": "", "sex": "unknown"})
    assert bad.status_code == 422
    assert "Lule" in bad.text and 'role="alert"' in bad.text and "Traceback" not in bad.text


async def test_api_refusals_are_readable_pages_not_stack_traces(live: Live, http: httpx.AsyncClient) -> None:
    m = new_municipality()
    other = await report(live, new_municipality())
    await http_sign_in(http, "coordinator", m)
    hidden = await http.get(f"/cases/{other['id']}")  # another municipality's case: 404 as if it did not exist
    assert hidden.status_code == 404
    assert "Nuk u gjet" in hidden.text and "problem" not in hidden.text.lower()
    bad_id = await http.get("/cases/not-a-uuid")
    assert bad_id.status_code == 404


async def test_an_institution_sees_its_queue_and_acts_on_a_referral(live: Live, http: httpx.AsyncClient) -> None:
    m = new_municipality()
    social = await member(live, m, "social_services")
    case = await report(live, m)
    referral = await referral_to(live, m, case["id"], social["id"])
    csrf = await http_sign_in(http, "social_services", m, member_id=social["id"])
    queue = await http.get("/")
    assert case["case_number"] in queue.text
    declined = await http.post(f"/referrals/{referral['id']}/decline", data={"csrf": csrf, "reason": ""})
    assert declined.status_code == 422 and 'role="alert"' in declined.text  # the service wants a reason
    done = await http.post(f"/referrals/{referral['id']}/acknowledge", data={"csrf": csrf})
    assert done.status_code == 303
    again = await http.post(f"/referrals/{referral['id']}/acknowledge", data={"csrf": csrf})
    assert again.status_code == 409 and 'role="alert"' in again.text


def test_every_text_of_the_pages_is_in_every_catalogue() -> None:
    used: set[str] = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"_\(\"([^\"]+)\"\)", template.read_text()))
        used |= set(re.findall(r"_\('([^']+)'\)", template.read_text()))
    source = "".join(p.read_text() for p in TEMPLATES.parent.rglob("*.py"))
    used |= set(re.findall(r"gettext\(\s*\"([^\"]+)\"", source))
    assert len(used) > 150
    albanian, english, serbian = catalogue("sq"), catalogue("en"), catalogue("sr")
    assert sorted(used - set(albanian)) == [] and sorted(used - set(english)) == []
    assert sorted(used - set(serbian)) == [] and set(serbian) == set(english)  # every text, codes too
    assert serbian["Free beds"] == "Slobodni kreveti"
    assert albanian["Free beds"] == "Shtretër të lirë" and english["Free beds"] == "Free beds"


async def test_oidc_callback_without_its_transaction_or_with_a_wrong_state_signs_nobody_in(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/auth/callback", params={"code": "x", "state": "y"})
    assert response.status_code == 400
    assert (await http.get("/")).headers["location"] == "/login"  # nobody signed in
    start = await http.get("/auth/oidc")
    assert start.status_code == 303
    location = start.headers["location"]
    assert "code_challenge=" in location and "code_challenge_method=S256" in location
    wrong = await http.get("/auth/callback", params={"code": "x", "state": "not-the-state"})
    assert wrong.status_code == 400


async def test_every_service_serves_docs_offline(live: Live) -> None:
    async with httpx.AsyncClient() as client:
        for name, url in {**live.service_urls, "console": live.url}.items():
            docs = await client.get(f"{url}/docs")
            assert docs.status_code == 200, name
            assert not re.search(r"(src|href)=\"(https?:)?//", docs.text), name
            for asset in re.findall(r"(?:src|href)=\"(/[^\"]+)\"", docs.text):
                fetched = await client.get(f"{url}{asset}")
                assert fetched.status_code == 200 and fetched.content, (name, asset)
            redoc = await client.get(f"{url}/redoc")
            assert redoc.status_code == 200 and "fonts.googleapis" not in redoc.text
            assert not re.search(r"(src|href)=\"(https?:)?//", redoc.text), name


async def test_readyz_reports_the_services(live: Live) -> None:
    async with httpx.AsyncClient() as client:
        ready = await client.get(f"{live.url}/readyz")
        assert ready.status_code == 200 and all(ready.json()["checks"].values())
        assert (await client.get(f"{live.url}/healthz")).status_code == 200
        metrics = await client.get(f"{live.url}/metrics")
        assert metrics.status_code == 200 and 'service="console"' in metrics.text
    started = time.monotonic()
    settings = live.settings.model_copy(update={"console_urls": {**live.settings.console_urls, "intake": "http://127.0.0.1:9"}})
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c.test") as client:
        unready = await client.get("/readyz")
        assert unready.status_code == 503 and unready.json()["checks"]["intake"] is False
    assert time.monotonic() - started < 10


async def test_coordinator_schedules_a_meeting_and_its_decision_becomes_a_plan_action(
    live: Live, http: httpx.AsyncClient
) -> None:
    m = new_municipality()
    social = await member(live, m, "social_services", "Shërbimi Social")
    case = await report(live, m)
    csrf = await http_sign_in(http, "coordinator", m)
    page = await http.get("/meetings")
    assert page.status_code == 200 and case["case_number"] in page.text
    scheduled = await http.post("/meetings", data={"csrf": csrf, "kind": "etn", "scheduled_for": "2026-11-25T10:00",
                                                   "case_ids": [case["id"]], "member_ids": [social["id"]]})
    assert scheduled.status_code == 303, scheduled.text[:1000]
    listing = await http.get("/meetings")
    meeting_id = re.search(r'action="/meetings/([0-9a-f-]{36})/minutes"', listing.text)
    assert meeting_id, listing.text[:3000]
    minutes = await http.post(f"/meetings/{meeting_id.group(1)}/minutes", data={
        "csrf": csrf, "attended_member_ids": [social["id"]], "case_id": case["id"], "action": "home visit",
        "responsible_member_id": social["id"], "due_date": "2026-12-20"})
    assert minutes.status_code == 303, minutes.text[:1000]
    case_page = await http.get(f"/cases/{case['id']}")
    assert "home visit" in case_page.text and "Shërbimi Social" in case_page.text
    reports = await http.get("/reports")
    assert reports.status_code == 200 and "Rastet sipas muajit" in reports.text and "<svg" in reports.text


async def test_the_role_pages_refuse_other_roles_and_bad_input_with_a_4xx(live: Live, http: httpx.AsyncClient) -> None:
    m = new_municipality()
    csrf = await http_sign_in(http, "coordinator", m)
    for path in ("/plan-actions", f"/shelter/cases/{'0' * 8}-0000-0000-0000-{'0' * 12}"):
        assert (await http.get(path)).status_code == 403, path  # not the coordinator's pages
    budget = await http.post("/rent-bonus/budgets", data={"csrf": csrf, "year": "2026", "amount": "5"})
    assert budget.status_code == 403  # only the housing office sets a budget
    placement = await http.post("/placements", data={"csrf": csrf, "case_id": "x"})
    assert placement.status_code == 403  # only shelter staff start one here
    assert (await http.get("/shelter/cases/not-a-uuid")).status_code in (403, 404)
    bad = await http.post("/routing-rules/save", data={"csrf": csrf, "name": "x", "refer_to": "ngo",
                                                       "urgency": "normal", "when": "{not json"})
    assert bad.status_code == 422 and 'role="alert"' in bad.text
    wrong = await http.post("/routing-rules/save", data={"csrf": csrf, "name": "Not A Slug", "refer_to": "ngo",
                                                         "urgency": "normal", "when": "[{}]"})
    assert wrong.status_code == 422 and 'role="alert"' in wrong.text  # the referral service's refusal
    gone = await http.post("/routing-rules/remove", data={"csrf": csrf, "original": "no_such_rule"})
    assert gone.status_code == 409
    table = await live.stack.referral.get("/v1/routing-rules", headers=live.auth("coordinator", m))
    assert table.json()["is_default"]  # nothing of the above changed the table

    housing = httpx.AsyncClient(base_url=live.url, timeout=30)
    async with housing:
        token = await http_sign_in(housing, "housing_officer", m)
        refused = await housing.post("/rent-bonus/budgets", data={"csrf": token, "year": "2026", "amount": "-5"})
        assert refused.status_code == 422 and 'role="alert"' in refused.text
        assert (await housing.get("/rent-bonus/budgets?year=abc")).status_code == 200  # falls back to this year
        assert (await housing.get("/routing-rules")).status_code == 403


async def test_a_rule_changed_by_someone_else_meanwhile_is_not_overwritten(live: Live, http: httpx.AsyncClient) -> None:
    m = new_municipality()
    coordinator = live.auth("coordinator", m)
    csrf = await http_sign_in(http, "coordinator", m)
    page = await http.get("/routing-rules")
    shown = re.search(r'name="original" value="always_social_services">\s*<input type="hidden" name="digest" '
                      r'value="([0-9a-f]{16})"', page.text)
    assert shown, page.text[:3000]
    table = await live.stack.referral.get("/v1/routing-rules", headers=coordinator)
    rules = table.json()["rules"]
    rules[0] = {**rules[0], "urgency": "emergency"}  # another coordinator changes that very rule
    put = await live.stack.referral.put("/v1/routing-rules", json={"rules": rules},
                                        headers=coordinator | {"If-Match": table.headers["etag"]})
    assert put.status_code == 200, put.text
    form = {"csrf": csrf, "original": "always_social_services", "digest": shown.group(1),
            "name": "always_social_services", "refer_to": "social_services", "urgency": "normal", "when": "[{}]"}
    stale = await http.post("/routing-rules/save", data=form)
    assert stale.status_code == 409 and 'role="alert"' in stale.text
    removed = await http.post("/routing-rules/remove", data={"csrf": csrf, "original": "always_social_services",
                                                             "digest": shown.group(1)})
    assert removed.status_code == 409
    after = (await live.stack.referral.get("/v1/routing-rules", headers=coordinator)).json()["rules"]
    assert after[0]["name"] == "always_social_services" and after[0]["urgency"] == "emergency"
    fresh = re.search(r'name="original" value="always_social_services">\s*<input type="hidden" name="digest" '
                      r'value="([0-9a-f]{16})"', (await http.get("/routing-rules")).text)
    assert fresh and fresh.group(1) != shown.group(1)
    saved = await http.post("/routing-rules/save", data=form | {"digest": fresh.group(1)})
    assert saved.status_code == 303
