"""The local signing key of the embedded default and `mkr token`."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwt

from shared.settings import Settings


def ensure_local_keypair(settings: Settings) -> tuple[Path, Path]:
    """Create an ES256 key pair under state_dir once; later runs reuse it."""
    private, public = settings.private_key_path, settings.public_key_path
    if private.exists() and public.exists():
        return private, public
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def issue_token(
    settings: Settings,
    *,
    role: str,
    municipality: str,
    sub: str | None = None,
    member_id: str | None = None,
    shelter_id: str | None = None,
    ttl: int = 3600,
    private_key_pem: str | None = None,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": sub or f"{role}-{uuid.uuid4().hex[:8]}",
        "iat": now,
        "exp": now + ttl,
        "role": role,
        "municipality": municipality,
    }
    if member_id:
        claims["member_id"] = member_id
    if shelter_id:
        claims["shelter_id"] = shelter_id
    pem = private_key_pem or settings.private_key_path.read_text()
    return str(jwt.encode(claims, pem, algorithm="ES256"))
