"""A short MKR_INDEX_KEY makes the keyed name trigrams guessable offline: production refuses it."""

from __future__ import annotations

import base64
import os

import pytest
from pydantic import ValidationError

from shared.crypto import SearchIndexer
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


def test_short_previous_index_key_is_refused_in_production_and_an_empty_one_is_unset() -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(ValidationError, match="MKR_INDEX_KEY_PREVIOUS of at least 32 bytes"):
        Settings(**PRODUCTION, index_key=key, index_key_previous="short")  # type: ignore[arg-type]
    unset = Settings(**PRODUCTION, index_key=key, index_key_previous="")  # type: ignore[arg-type]
    assert SearchIndexer.from_settings(unset).previous is None


def test_index_key_id_names_the_key_without_revealing_it() -> None:
    old, new = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    rotated = SearchIndexer.from_settings(Settings(environment="development", index_key=new, index_key_previous=old))
    again = SearchIndexer.from_settings(Settings(environment="development", index_key=new))
    assert rotated.key_id == again.key_id and len(rotated.key_id) == 8
    assert rotated.previous is not None and rotated.previous.key_id != rotated.key_id
    assert [reader.key_id for reader in rotated.readers] == [rotated.key_id, rotated.previous.key_id]
    assert again.readers == [again] and rotated.key_id not in new
    # Under two keys the same name shares no keyed trigram: a probe under one key meets only its own rows.
    assert not set(rotated.keyed("Ermira Hoxha")) & set(rotated.previous.keyed("Ermira Hoxha"))
    # The same key given as previous too is one key: read once.
    same = Settings(environment="development", index_key=new, index_key_previous=new)
    assert SearchIndexer.from_settings(same).previous is None
