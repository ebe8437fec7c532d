"""The console's session: an encrypted, authenticated cookie holding the person's token and a CSRF secret.

Nothing is kept on the server, so any replica serves any request. The cookie lives as long as the
token (CONTRACT §11: session = the token's lifetime); it carries the token and the claims the pages
need (role, municipality, member and shelter ids), never a survivor's data.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.settings import Settings

COOKIE = "mkr_session"
# The OpenID Connect transaction (state, PKCE verifier, nonce): SameSite=Lax, because the provider's
# redirect back is a cross-site navigation that a Strict cookie would not accompany.
OIDC_COOKIE = "mkr_oidc"
LANG_COOKIE = "mkr_lang"
ANONYMOUS_SECONDS = 3600
_AAD = b"mkr-console-session-v1"


@dataclass
class Session:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    exp: int = field(default_factory=lambda: int(time.time()) + ANONYMOUS_SECONDS)
    token: str | None = None
    sub: str | None = None
    role: str | None = None
    municipality: str | None = None
    member_id: str | None = None
    shelter_id: str | None = None
    # How the person signed in: "local" (development form) or "oidc".
    via: str | None = None

    @property
    def signed_in(self) -> bool:
        return self.token is not None and self.exp > time.time()

    @property
    def remaining(self) -> int:
        return max(0, self.exp - int(time.time()))


def load_session_key(settings: Settings) -> bytes:
    """MKR_CONSOLE_SESSION_KEY (base64 of 32 bytes); development and tests keep one under state_dir."""
    raw = settings.console_session_key
    if raw:
        try:
            key = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("MKR_CONSOLE_SESSION_KEY must be base64 of 32 bytes") from exc
        if len(key) != 32:
            raise ValueError("MKR_CONSOLE_SESSION_KEY must be base64 of 32 bytes")
        return key
    if settings.environment == "production":
        raise ValueError("production needs MKR_CONSOLE_SESSION_KEY")
    path = settings.state_dir / "console-session.key"
    if not path.exists():
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    key = path.read_bytes()
    if len(key) != 32:
        raise ValueError(f"{path} must hold 32 bytes")
    return key


class SessionCodec:
    """AES-GCM sealing of small JSON values for cookies."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, value: dict[str, Any]) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, json.dumps(value, separators=(",", ":")).encode(), _AAD)
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open(self, text: str | None) -> dict[str, Any] | None:
        if not text or len(text) > 8192:
            return None
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            if len(raw) < 29:
                return None
            value = json.loads(self._aead.decrypt(raw[:12], raw[12:], _AAD))
        except (InvalidTag, ValueError, binascii.Error):
            return None
        return value if isinstance(value, dict) else None

    def encode_session(self, session: Session) -> str:
        return self.seal(asdict(session))

    def decode_session(self, text: str | None) -> Session | None:
        value = self.open(text)
        if value is None:
            return None
        try:
            fields: dict[str, Any] = {k: value.get(k) for k in Session.__dataclass_fields__ if k in value}
            session = Session(**fields)
        except TypeError:
            return None
        if not isinstance(session.exp, int) or session.exp <= time.time() or not isinstance(session.csrf, str):
            return None
        return session
