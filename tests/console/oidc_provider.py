"""A small OpenID Connect provider for the test session: discovery, JWKS, authorize, token (code + PKCE S256).

It stands in for a municipality's identity provider. Its access tokens are MKR tokens (signed with the test
session's key, `iss`/`aud` as the services expect, `role` and `municipality` claims); its ID tokens are
signed with the same key and name the provider as issuer and the console as audience.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Form, Header, Request
from fastapi.responses import JSONResponse, RedirectResponse
from jose import jwk, jwt

from shared.settings import Settings

CLIENT_ID = "mkr-console-test"
CLIENT_SECRET = secrets.token_urlsafe(24)
KID = "test-key-1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass
class ProviderState:
    issuer: str = ""
    # The person who "signs in" at the provider next (the test sets it).
    next_claims: dict[str, Any] = field(default_factory=dict)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)


def create_provider(settings: Settings, state: ProviderState) -> FastAPI:
    app = FastAPI()
    private_pem = settings.private_key_path.read_text()
    public_jwk = jwk.construct(settings.public_key_path.read_text(), "ES256").to_dict()
    public_jwk.update({"kid": KID, "use": "sig", "alg": "ES256"})

    @app.get("/.well-known/openid-configuration")
    async def discovery() -> dict[str, Any]:
        return {
            "issuer": state.issuer,
            "authorization_endpoint": f"{state.issuer}/authorize",
            "token_endpoint": f"{state.issuer}/token",
            "jwks_uri": f"{state.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        }

    @app.get("/jwks")
    async def jwks() -> dict[str, Any]:
        return {"keys": [public_jwk]}

    @app.get("/authorize")
    async def authorize(request: Request) -> Any:
        q = request.query_params
        if (
            q.get("response_type") != "code"
            or q.get("client_id") != CLIENT_ID
            or q.get("code_challenge_method") != "S256"
            or not q.get("code_challenge")
            or not q.get("state")
            or not q.get("nonce")
            or not q.get("redirect_uri")
        ):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = secrets.token_urlsafe(24)
        state.codes[code] = {
            "challenge": q["code_challenge"], "nonce": q["nonce"], "redirect_uri": q["redirect_uri"],
            "claims": dict(state.next_claims), "at": time.time(),
        }
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}", 302)

    @app.post("/token")
    async def token(
        grant_type: str = Form(),
        code: str = Form(),
        redirect_uri: str = Form(),
        code_verifier: str = Form(""),
        authorization: str = Header(""),
    ) -> JSONResponse:
        state.token_requests.append({"grant_type": grant_type, "code_verifier": code_verifier})
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if authorization != expected:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = state.codes.pop(code, None)
        if (
            grant_type != "authorization_code"
            or grant is None
            or grant["redirect_uri"] != redirect_uri
            or _b64(hashlib.sha256(code_verifier.encode()).digest()) != grant["challenge"]
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        now = int(time.time())
        claims = grant["claims"]
        access = jwt.encode(
            {"iss": settings.jwt_issuer, "aud": settings.jwt_audience, "sub": claims["sub"], "iat": now,
             "exp": now + 1800, **{k: v for k, v in claims.items() if k != "sub"}},
            private_pem, algorithm="ES256", headers={"kid": KID},
        )
        at_hash = _b64(hashlib.sha256(access.encode()).digest()[:16])
        id_token = jwt.encode(
            {"iss": state.issuer, "aud": CLIENT_ID, "sub": claims["sub"], "iat": now, "exp": now + 300,
             "nonce": grant["nonce"], "at_hash": at_hash},
            private_pem, algorithm="ES256", headers={"kid": KID},
        )
        return JSONResponse({"access_token": access, "id_token": id_token, "token_type": "Bearer",
                             "expires_in": 1800})

    return app
