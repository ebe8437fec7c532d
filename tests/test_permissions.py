"""Generated from the routes: every endpoint × every role, own municipality, plus the contract's table.

The matrix lives on the routes (`allow(...)`); `mkr.permissions` reads it. These tests call each
endpoint as each role and check the answer, check that no `/v1` endpoint skips authentication, that
the contract's "who" column holds, and that docs/PERMISSIONS.md is the current rendering.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from mkr.permissions import Endpoint, matrix, render_markdown
from shared.auth import INSTITUTION_ROLES, Role
from tests.support import Stack, new_municipality

MATRIX = matrix()
V1 = [ep for ep in MATRIX if ep.path.startswith("/v1/")]
INST = {r.value for r in INSTITUTION_ROLES}
ALL = {r.value for r in Role}

# CONTRACT §5–§8, the "who" column, for the calls whose role list is explicit.
CONTRACT: dict[tuple[str, str, str], set[str]] = {
    ("intake", "POST", "/v1/cases"): INST | {"coordinator"},
    ("intake", "GET", "/v1/cases"): {"coordinator"},
    ("intake", "POST", "/v1/cases/{case_id}/risk-assessments"): INST | {"coordinator"},
    ("intake", "POST", "/v1/cases/{case_id}/protection-orders"): {"police", "coordinator", "legal_aid"},
    ("intake", "POST", "/v1/cases/{case_id}/close"): {"coordinator"},
    ("intake", "GET", "/v1/audit"): {"coordinator", "auditor"},
    ("referral", "POST", "/v1/members"): {"admin", "coordinator"},
    ("referral", "GET", "/v1/members"): ALL,
    ("referral", "POST", "/v1/referrals"): INST | {"coordinator"},
    ("referral", "POST", "/v1/etn-meetings"): {"coordinator"},
    ("referral", "GET", "/v1/etn-meetings"): {"coordinator"},
    ("referral", "GET", "/v1/dashboard"): {"coordinator"},
    ("referral", "GET", "/v1/reports/summary"): {"coordinator", "auditor"},
    ("referral", "GET", "/v1/reports/cases.csv"): {"coordinator", "auditor"},
    ("shelter", "POST", "/v1/shelters"): {"admin", "coordinator"},
    ("shelter", "GET", "/v1/shelters"): ALL,
    ("shelter", "PUT", "/v1/shelters/{shelter_id}/availability"): {"shelter_staff", "coordinator"},
    ("shelter", "POST", "/v1/placements"): {"shelter_staff", "coordinator"},
    ("shelter", "POST", "/v1/rent-bonus/applications"): {"coordinator", "social_services", "housing_officer"},
    ("shelter", "POST", "/v1/rent-bonus/applications/{application_id}/decision"): {"housing_officer"},
    ("shelter", "POST", "/v1/rent-bonus/payments/{payment_id}/pay"): {"housing_officer"},
    ("shelter", "PUT", "/v1/rent-bonus/budgets/{municipality}/{year}"): {"housing_officer"},
    ("shelter", "GET", "/v1/rent-bonus/budgets/{municipality}/{year}"): {"housing_officer", "coordinator", "auditor"},
    ("notifications", "GET", "/v1/inbox"): ALL,
    ("notifications", "GET", "/v1/inbox/stream"): ALL,
    ("notifications", "POST", "/v1/subscriptions"): INST | {"coordinator"},
    ("notifications", "GET", "/v1/subscriptions"): INST | {"coordinator"},
}
PARAM = re.compile(r"{([^}]+)}")


def _ids(ep: Endpoint) -> str:
    return f"{ep.service}:{ep.method}:{ep.path}"


def _concrete(path: str, municipality: str) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "municipality":
            return municipality
        if name == "year":
            return "2026"
        if name == "action":
            return "acknowledge"
        return str(uuid.uuid4())

    return PARAM.sub(fill, path)


@pytest.mark.parametrize("endpoint", V1, ids=_ids)
def test_every_v1_endpoint_declares_its_roles(endpoint: Endpoint) -> None:
    assert endpoint.roles is not None, f"{_ids(endpoint)} has no allow(...) dependency"


@pytest.mark.parametrize("key", sorted(CONTRACT), ids=lambda k: ":".join(k))
def test_contract_who_column_holds(key: tuple[str, str, str]) -> None:
    found = [ep for ep in MATRIX if (ep.service, ep.method, ep.path) == key]
    assert found, f"{key} is in the contract but not served"
    assert {r.value for r in found[0].roles or ()} == CONTRACT[key]


def test_permissions_doc_is_current() -> None:
    doc = Path(__file__).parent.parent / "docs" / "PERMISSIONS.md"
    hint = "regenerate: .venv/bin/python -m mkr.permissions > docs/PERMISSIONS.md"
    assert doc.read_text() == render_markdown(MATRIX), hint


@pytest.mark.parametrize("endpoint", V1, ids=_ids)
async def test_each_role_gets_the_matrix_answer(stack: Stack, endpoint: Endpoint) -> None:
    municipality = new_municipality()
    client = stack.clients[endpoint.service]
    path = _concrete(endpoint.path, municipality)
    unauthenticated = await client.request(endpoint.method, path)
    assert unauthenticated.status_code == 401, f"{endpoint.method} {path} without a token"
    for role in sorted(ALL):
        claims: dict[str, str] = {}
        if role in INST:
            claims["member_id"] = str(uuid.uuid4())
        if role == "shelter_staff":
            claims["shelter_id"] = str(uuid.uuid4())
        headers = stack.auth(role, "*" if role == "auditor" else municipality, **claims)
        if endpoint.path.endswith("/stream"):
            # A stream stays open: only the refusal is checked here; the streaming tests cover the rest.
            if role in (endpoint.roles or ()):
                continue
        response = await client.request(endpoint.method, path, headers=headers)
        allowed = role in {r.value for r in endpoint.roles or ()}
        if allowed:
            assert response.status_code not in (401, 403), (role, endpoint.method, path, response.text)
            assert response.status_code < 500, (role, endpoint.method, path, response.text)
        else:
            assert response.status_code == 403, (role, endpoint.method, path, response.status_code)
