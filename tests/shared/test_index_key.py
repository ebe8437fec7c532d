"""A short MKR_INDEX_KEY makes the keyed name trigrams guessable offline: production refuses it."""

from __future__ import annotations

import base64
import os

import pytest
from pydantic import ValidationError

from shared.settings import Settings

PRODUCTION = {
    "environment": "production",
    "database_url": "postgresql://mkr@db.internal/mkr",
    "encryption_key": base64.b64encode(os.urandom(32)).decode(),
    "jwt_public_key": "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----",
}


@pytest.mark.parametrize("key", ["secret", "x" * 31, "é" * 15])
def test_short_index_key_is_refused_in_production(key: str) -> None:
    with pytest.raises(ValidationError, match="MKR_INDEX_KEY of at least 32 bytes"):
        Settings(**PRODUCTION, index_key=key)  # type: ignore[arg-type]


def test_index_key_of_32_bytes_starts_production_and_short_keys_stay_fine_in_development() -> None:
    assert Settings(**PRODUCTION, index_key=base64.b64encode(os.urandom(32)).decode()).index_key  # type: ignore[arg-type]
    assert Settings(**PRODUCTION, index_key="x" * 32).index_key  # type: ignore[arg-type]
    assert Settings(environment="development", index_key="short").index_key == "short"
