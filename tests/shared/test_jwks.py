"""Tokens from an external identity provider, verified against its JWKS served on loopback."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt

from shared.auth import TokenVerifier
from shared.errors import Problem
from shared.settings import Settings


def _rsa_pem() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private, public


@pytest.fixture
def idp() -> Iterator[tuple[str, dict[str, str]]]:
    """A JWKS endpoint on 127.0.0.1 with two RSA keys; yields its URL and the private keys by kid."""
    keys = {f"k{i}": _rsa_pem() for i in range(2)}
    document = {
        "keys": [
            {**jwk.construct(public, "RS256").to_dict(), "kid": kid, "use": "sig", "alg": "RS256"}
            for kid, (_, public) in keys.items()
        ]
    }
    body = json.dumps(document).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", {k: v[0] for k, v in keys.items()}
    server.shutdown()


def _claims() -> dict[str, object]:
    now = int(time.time())
    return {"iss": "idp", "aud": "mkr", "sub": f"u-{uuid.uuid4().hex[:6]}", "iat": now, "exp": now + 300,
            "role": "police", "municipality": "tirane", "member_id": "m-9"}


async def test_jwks_tokens_are_verified_by_kid(idp: tuple[str, dict[str, str]]) -> None:
    url, private = idp
    verifier = TokenVerifier(Settings(jwt_jwks_url=url, jwt_issuer="idp", jwt_audience="mkr"))
    for kid, pem in private.items():
        signed = jwt.encode(_claims(), pem, algorithm="RS256", headers={"kid": kid})
        principal = await verifier.verify(signed)
        assert principal.role == "police" and principal.member_id == "m-9"


async def test_jwks_token_with_wrong_kid_or_key_is_refused(idp: tuple[str, dict[str, str]]) -> None:
    url, private = idp
    verifier = TokenVerifier(Settings(jwt_jwks_url=url, jwt_issuer="idp", jwt_audience="mkr"))
    swapped = jwt.encode(_claims(), private["k0"], algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(Problem) as refused:
        await verifier.verify(swapped)
    assert refused.value.status == 401
    unknown = jwt.encode(_claims(), _rsa_pem()[0], algorithm="RS256", headers={"kid": "nope"})
    with pytest.raises(Problem) as unknown_kid:
        await verifier.verify(unknown)
    assert unknown_kid.value.status == 401
