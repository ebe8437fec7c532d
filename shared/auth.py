"""JWT verification (RS256/ES256 only) and the role/municipality dependency every route declares."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from jose import jwt
from jose.exceptions import JOSEError

from shared.errors import Problem, forbidden, unauthorized
from shared.settings import Settings

ALGORITHMS = ["RS256", "ES256"]  # pinned: never HS*, never none
FUTURE_IAT_SECONDS = 60  # an `iat` further ahead than this is refused (CONTRACT §2)
MUNICIPALITY_RE = re.compile(r"^[a-z][a-z0-9-]{1,62}$")


class Role(StrEnum):
    coordinator = "coordinator"
    police = "police"
    social_services = "social_services"
    child_protection = "child_protection"
    health = "health"
    education = "education"
    employment = "employment"
    legal_aid = "legal_aid"
    ngo = "ngo"
    shelter_staff = "shelter_staff"
    housing_officer = "housing_officer"
    auditor = "auditor"
    admin = "admin"


INSTITUTION_ROLES: frozenset[Role] = frozenset(
    {
        Role.police,
        Role.social_services,
        Role.child_protection,
        Role.health,
        Role.education,
        Role.employment,
        Role.legal_aid,
        Role.ngo,
    }
)
ALL_ROLES: frozenset[Role] = frozenset(Role)


@dataclass(frozen=True)
class Principal:
    """Who is calling, from verified claims only."""

    sub: str
    role: Role
    municipality: str
    member_id: str | None = None
    shelter_id: str | None = None

    @property
    def is_institution(self) -> bool:
        return self.role in INSTITUTION_ROLES

    def sees_municipality(self, municipality: str) -> bool:
        return self.municipality == "*" or self.municipality == municipality


class TokenVerifier:
    """Verifies bearer tokens against a PEM public key or a JWKS document."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pem: str | None = None
        self._jwks: dict[str, Any] | None = None
        self._jwks_fetched_at = 0.0
        self._lock = asyncio.Lock()

    def _load_pem(self) -> str:
        if self._pem is None:
            raw = self.settings.jwt_public_key
            if raw and "-----BEGIN" in raw:
                self._pem = raw
            elif raw:
                self._pem = Path(raw).read_text()
            else:
                self._pem = self.settings.public_key_path.read_text()
        return self._pem

    async def _jwks_key(self, kid: str | None) -> Any:
        url = self.settings.jwt_jwks_url
        assert url is not None
        async with self._lock:
            stale = time.monotonic() - self._jwks_fetched_at > 300
            known = self._jwks is not None and any(k.get("kid") == kid for k in self._jwks.get("keys", []))
            # Refetch on an unknown kid (key rotation), at most every 10 s.
            if self._jwks is None or stale or (not known and time.monotonic() - self._jwks_fetched_at > 10):
                async with httpx.AsyncClient(timeout=5) as client:
                    response = await client.get(url)
                    response.raise_for_status()
                    self._jwks = response.json()
                self._jwks_fetched_at = time.monotonic()
        keys = (self._jwks or {}).get("keys", [])
        for key in keys:
            if kid is None or key.get("kid") == kid:
                return key
        raise unauthorized("The token's signing key is unknown.")

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except JOSEError as exc:
            raise unauthorized("The token is malformed.") from exc
        if header.get("alg") not in ALGORITHMS:
            raise unauthorized("The token's algorithm is not accepted.")
        try:
            key: Any = (
                await self._jwks_key(header.get("kid")) if self.settings.jwt_jwks_url else self._load_pem()
            )
        except (OSError, httpx.HTTPError) as exc:
            raise Problem(503, "The identity provider's keys are unavailable.") from exc
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                options={
                    "require_exp": True,
                    "require_iat": True,
                    "require_iss": True,
                    "require_aud": True,
                    "require_sub": True,
                    "leeway": self.settings.jwt_leeway_seconds,
                },
            )
        except JOSEError as exc:
            raise unauthorized("The token is invalid or expired.") from exc
        check_lifetime(claims, self.settings.jwt_max_lifetime_seconds)
        return principal_from_claims(claims)


def check_lifetime(claims: dict[str, Any], max_lifetime: int, now: float | None = None) -> None:
    """CONTRACT §2: `exp - iat` at most `max_lifetime` seconds, `iat` at most 60 s in the future (401)."""
    exp, iat = claims.get("exp"), claims.get("iat")
    if isinstance(exp, bool) or isinstance(iat, bool) or not isinstance(exp, int | float) or not isinstance(
        iat, int | float
    ):
        raise unauthorized("The token's exp and iat must be numbers.")
    if exp - iat > max_lifetime:
        raise unauthorized("The token lives longer than this service accepts.")
    if iat > (time.time() if now is None else now) + FUTURE_IAT_SECONDS:
        raise unauthorized("The token was issued in the future.")


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    try:
        role = Role(str(claims.get("role")))
    except ValueError as exc:
        raise unauthorized("The token carries no known role.") from exc
    municipality = claims.get("municipality")
    if not isinstance(municipality, str) or not (
        MUNICIPALITY_RE.match(municipality) or (municipality == "*" and role is Role.auditor)
    ):
        raise unauthorized("The token carries no valid municipality.")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise unauthorized("The token carries no subject.")

    def _opt(name: str) -> str | None:
        value = claims.get(name)
        return str(value) if value not in (None, "") else None

    return Principal(
        sub=sub,
        role=role,
        municipality=municipality,
        member_id=_opt("member_id"),
        shelter_id=_opt("shelter_id"),
    )


# Declares the bearer scheme in OpenAPI; checking stays ours (auto_error off) so every refusal is problem+json.
bearer_scheme = HTTPBearer(auto_error=False, description="A JWT signed RS256 or ES256 (CONTRACT §2)")


async def authenticate(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> Principal:
    if credentials is None or not credentials.credentials.strip():
        raise unauthorized()
    verifier: TokenVerifier = request.app.state.verifier
    principal = await verifier.verify(credentials.credentials.strip())
    request.state.principal = principal
    return principal


def allow(*roles: Role | Iterable[Role]) -> Callable[..., Any]:
    """A dependency that authenticates and admits only the given roles (403 otherwise)."""
    allowed: set[Role] = set()
    for item in roles:
        if isinstance(item, Role):
            allowed.add(item)
        else:
            allowed.update(item)

    async def _dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if principal.role not in allowed:
            raise forbidden()
        return principal

    _dependency.allowed_roles = frozenset(allowed)  # type: ignore[attr-defined]
    return _dependency


def require_own_municipality(principal: Principal, municipality: str) -> None:
    """A body that names another municipality is refused (403): the caller acts for their own only."""
    if principal.municipality != municipality:
        raise forbidden("You may only act for your own municipality.")


AnyRole = Annotated[Principal, Depends(allow(ALL_ROLES))]
