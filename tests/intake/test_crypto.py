"""shared.crypto: AES-GCM with key ids (rotation), binding to context, keyed trigram index."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from shared.crypto import DecryptionError, FieldCipher, SearchIndexer, normalise_name, parse_keyring
from shared.settings import Settings


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_ciphertext_opens_only_with_its_context_and_is_versioned() -> None:
    cipher = FieldCipher(parse_keyring(key()))
    token = cipher.encrypt("Ermira", "case:1:personal")
    assert token.startswith("k1:") and "Ermira" not in token
    assert cipher.decrypt(token, "case:1:personal") == "Ermira"
    with pytest.raises(DecryptionError):
        cipher.decrypt(token, "case:2:personal")


def test_rotated_keyring_encrypts_with_the_new_key_and_still_opens_old_data() -> None:
    old, new = key(), key()
    before = FieldCipher(parse_keyring(f"k1={old}"))
    token = before.encrypt("secret", "ctx")
    after = FieldCipher(parse_keyring(f"k2={new},k1={old}"))
    assert after.decrypt(token, "ctx") == "secret"
    assert after.encrypt("secret", "ctx").startswith("k2:")


def test_bad_keys_are_refused() -> None:
    for raw in ("not base64!", base64.b64encode(b"short").decode(), ""):
        with pytest.raises(ValueError):
            parse_keyring(raw)


def test_development_key_is_created_once_under_state_dir(tmp_path: Path) -> None:
    settings = Settings(environment="test", state_dir=tmp_path)
    token = FieldCipher.from_settings(settings).encrypt("x", "c")
    assert FieldCipher.from_settings(settings).decrypt(token, "c") == "x"
    assert (tmp_path / "encryption.key").stat().st_mode & 0o077 == 0


def test_names_normalise_without_accents() -> None:
    assert normalise_name("Ermirë  HOXHË-Çela") == ["ermire", "hoxhe", "cela"]


def test_keyed_trigrams_hide_the_name_but_keep_similarity() -> None:
    indexer = SearchIndexer(os.urandom(32))
    a, b = set(indexer.keyed("Ermira Hoxha", "elbasan")), set(indexer.keyed("Ermirë Hoxhë", "elbasan"))
    assert len(a & b) / len(a | b) > 0.45
    assert not set(indexer.keyed("Ermira Hoxha", "tirane")) & a
    assert all("erm" not in k for k in a)
