"""OpenID Connect sign-in: authorization code with PKCE (S256) against the municipality's provider (authlib)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from jose import jwt
from jose.exceptions import JOSEError

from shared.settings import Settings

ALGORITHMS = ["RS256", "ES256"]


class OidcError(Exception):
    """The provider refused, or what it answered does not hold up; the person is told to sign in again."""


@dataclass
class Provider:
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    issuer: str


class OidcClient:
    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        assert settings.console_oidc_issuer and settings.console_oidc_client_id
        self.issuer = settings.console_oidc_issuer.rstrip("/")
        self.client_id = settings.console_oidc_client_id
        self.client_secret = settings.console_oidc_client_secret
        self._transport = transport
        self._provider: Provider | None = None
        self._jwks: dict[str, Any] | None = None
        self._fetched_at = 0.0

    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=10, transport=self._transport)

    async def provider(self) -> Provider:
        if self._provider is None or time.monotonic() - self._fetched_at > 3600:
            try:
                async with self._http() as client:
                    response = await client.get(f"{self.issuer}/.well-known/openid-configuration")
                    response.raise_for_status()
                    meta = response.json()
                    jwks = await client.get(meta["jwks_uri"])
                    jwks.raise_for_status()
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                raise OidcError("discovery failed") from exc
            if str(meta.get("issuer", "")).rstrip("/") != self.issuer:
                raise OidcError("the discovery document names another issuer")
            self._provider = Provider(
                authorization_endpoint=meta["authorization_endpoint"],
                token_endpoint=meta["token_endpoint"],
                jwks_uri=meta["jwks_uri"],
                issuer=str(meta["issuer"]),
            )
            self._jwks = jwks.json()
            self._fetched_at = time.monotonic()
        return self._provider

    def _oauth(self, redirect_uri: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=self.client_secret,
            scope="openid",
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            timeout=10,
            transport=self._transport,
        )

    async def start(self, redirect_uri: str) -> tuple[str, dict[str, str]]:
        """The provider's authorization URL, and the transaction to keep until the callback."""
        provider = await self.provider()
        transaction = {"state": generate_token(32), "nonce": generate_token(32), "verifier": generate_token(64)}
        async with self._oauth(redirect_uri) as oauth:
            url, _ = oauth.create_authorization_url(
                provider.authorization_endpoint,
                state=transaction["state"],
                nonce=transaction["nonce"],
                code_verifier=transaction["verifier"],
            )
        return str(url), transaction

    async def finish(self, redirect_uri: str, transaction: dict[str, str], code: str) -> str:
        """Exchange the code (with the PKCE verifier), check the ID token; the access token for the API."""
        provider = await self.provider()
        try:
            async with self._oauth(redirect_uri) as oauth:
                token = await oauth.fetch_token(
                    provider.token_endpoint,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=transaction["verifier"],
                )
        except Exception as exc:  # authlib raises its own error classes and httpx's
            raise OidcError("the code exchange failed") from exc
        access_token = token.get("access_token")
        id_token = token.get("id_token")
        if not isinstance(access_token, str) or not isinstance(id_token, str):
            raise OidcError("the provider answered without tokens")
        try:
            header = jwt.get_unverified_header(id_token)
            keys = [k for k in (self._jwks or {}).get("keys", []) if k.get("kid") in (None, header.get("kid"))]
            if not keys:
                raise OidcError("the ID token's key is unknown")
            claims = jwt.decode(
                id_token,
                keys[0],
                algorithms=ALGORITHMS,
                audience=self.client_id,
                issuer=provider.issuer,
                access_token=access_token,
            )
        except JOSEError as exc:
            raise OidcError("the ID token is invalid") from exc
        if claims.get("nonce") != transaction["nonce"]:
            raise OidcError("the ID token's nonce does not match")
        return access_token
