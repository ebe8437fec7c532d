"""Tokens: RS256/ES256 with iss/aud/exp required; every forgery is a 401 problem."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwt

from shared.settings import Settings
from tests.support import Stack, token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(settings: Settings, **overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": "tester",
        "iat": now,
        "exp": now + 600,
        "role": "coordinator",
        "municipality": "elbasan",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(settings: Settings, claims: dict[str, object]) -> str:
    return str(jwt.encode(claims, settings.private_key_path.read_text(), algorithm="ES256"))


def _unsigned(header: dict[str, object], claims: dict[str, object], signature: bytes = b"") -> str:
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(signature)}"


async def _get(stack: Stack, bearer: str | None) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer is not None else {}
    response = await stack.intake.get(f"/v1/cases/{uuid.uuid4()}", headers=headers)
    return response.status_code, response.json()


async def test_valid_local_token_is_accepted(stack: Stack) -> None:
    status, body = await _get(stack, token(stack.settings, "coordinator"))
    assert status == 404, body  # authenticated; the case simply does not exist


async def test_missing_token_is_401_problem(stack: Stack) -> None:
    response = await stack.intake.get(f"/v1/cases/{uuid.uuid4()}")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["status"] == 401


async def test_alg_none_is_401(stack: Stack) -> None:
    forged = _unsigned({"alg": "none", "typ": "JWT"}, _claims(stack.settings))
    assert (await _get(stack, forged))[0] == 401


async def test_edited_claims_are_401(stack: Stack) -> None:
    genuine = token(stack.settings, "police", member_id="m1")
    head, _, signature = genuine.split(".")
    edited = _b64(json.dumps(_claims(stack.settings, role="coordinator")).encode())
    assert (await _get(stack, f"{head}.{edited}.{signature}"))[0] == 401


async def test_expired_token_is_401(stack: Stack) -> None:
    past = int(time.time()) - 3600
    expired = _sign(stack.settings, _claims(stack.settings, iat=past - 600, exp=past))
    assert (await _get(stack, expired))[0] == 401


async def test_hs256_signed_with_the_public_key_is_401(stack: Stack) -> None:
    public_pem = stack.settings.public_key_path.read_bytes()
    header = {"alg": "HS256", "typ": "JWT"}
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(_claims(stack.settings)).encode())
    mac = hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert (await _get(stack, f"{head}.{body}.{_b64(mac)}"))[0] == 401


@pytest.mark.parametrize(
    "overrides",
    [
        {"iss": "someone-else"},
        {"aud": "another-api"},
        {"exp": None},
        {"iss": None},
        {"aud": None},
        {"sub": None},
        {"role": "superuser"},
        {"municipality": "*"},  # only the auditor may span municipalities
        {"municipality": "../etc"},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
async def test_tokens_with_wrong_or_missing_claims_are_401(stack: Stack, overrides: dict[str, object]) -> None:
    assert (await _get(stack, _sign(stack.settings, _claims(stack.settings, **overrides))))[0] == 401


async def test_token_signed_by_another_key_is_401(stack: Stack) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    forged = jwt.encode(_claims(stack.settings), other.decode(), algorithm="ES256")
    assert (await _get(stack, forged))[0] == 401


async def test_rs256_token_against_an_ec_key_is_401(stack: Stack) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    forged = jwt.encode(_claims(stack.settings), rsa_key.decode(), algorithm="RS256")
    assert (await _get(stack, forged))[0] == 401


async def test_garbage_bearer_is_401_not_500(stack: Stack) -> None:
    for junk in ["x", "a.b.c", "....", "eyJhbGciOiJFUzI1NiJ9.e30.", "Bearer", "%ff" * 10]:
        status, _ = await _get(stack, junk)
        assert status == 401, junk


async def test_role_not_allowed_is_403(stack: Stack) -> None:
    response = await stack.intake.get(
        f"/v1/cases/{uuid.uuid4()}", headers=stack.auth("admin")
    )
    assert response.status_code == 403
    assert response.json()["status"] == 403


async def test_token_living_longer_than_the_maximum_is_401(stack: Stack) -> None:
    """A stolen long-lived token (a year, say) is refused however well it is signed."""
    now = int(time.time())
    limit = stack.settings.jwt_max_lifetime_seconds
    status, body = await _get(stack, _sign(stack.settings, _claims(stack.settings, iat=now, exp=now + limit + 1)))
    assert status == 401, body
    assert body["status"] == 401 and "longer" in str(body["detail"])
    status, body = await _get(stack, _sign(stack.settings, _claims(stack.settings, iat=now, exp=now + limit)))
    assert status == 404, body  # exactly the maximum is still accepted


async def test_token_issued_in_the_future_is_401(stack: Stack) -> None:
    """A token minted ahead of time (to outlive a revocation or a key change) is refused."""
    now = int(time.time())
    status, body = await _get(stack, _sign(stack.settings, _claims(stack.settings, iat=now + 3600, exp=now + 4000)))
    assert status == 401, body
    assert "future" in str(body["detail"])
    status, body = await _get(stack, _sign(stack.settings, _claims(stack.settings, iat=now + 30, exp=now + 600)))
    assert status == 404, body  # within the 60 s of clock skew


@pytest.mark.parametrize("value", ["1700000000", True])
async def test_token_with_a_non_numeric_iat_is_401(stack: Stack, value: object) -> None:
    status, body = await _get(stack, _sign(stack.settings, _claims(stack.settings, iat=value)))
    assert status == 401, body
