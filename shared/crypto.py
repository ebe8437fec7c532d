"""Application-level encryption of personal data (AES-256-GCM) and the keyed, non-reversible search index.

Ciphertexts are text: `<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`. The key id in front lets keys
rotate: `MKR_ENCRYPTION_KEY` is either one base64 key (id `k1`) or a list `id=base64,id=base64`
whose first entry encrypts and all of which decrypt.

The search index never stores a name: each normalised name trigram is replaced by a truncated
HMAC-SHA256 under `MKR_INDEX_KEY`, so the database can compare sets of keyed trigrams (similarity of
names, accent- and typo-tolerant) without holding anything that reads back as a name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import tempfile
import unicodedata
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.settings import Settings

NONCE_BYTES = 12
KEY_ID_CHARS = 8  # hex characters of an index key's fingerprint


class DecryptionError(Exception):
    """A ciphertext that no configured key opens (wrong key, tampered, or bound to other data)."""


def _decode_key(raw: str) -> bytes:
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("an encryption key must be base64") from exc
    if len(key) != 32:
        raise ValueError("an encryption key must be 32 bytes (base64)")
    return key


def parse_keyring(raw: str) -> list[tuple[str, bytes]]:
    """`base64` → [("k1", key)]; `id=base64,id2=base64` → in that order (the first encrypts)."""
    entries = [part.strip() for part in raw.split(",") if part.strip()]
    ring: list[tuple[str, bytes]] = []
    for entry in entries:
        # A bare 32-byte key is 44 base64 characters whose only "=" is the last; "id=key" has one earlier.
        if "=" in entry and entry.index("=") < 40:
            kid, _, value = entry.partition("=")
        else:
            kid, value = "k1", entry
        if not kid.isalnum():
            raise ValueError("a key id is letters and digits")
        ring.append((kid, _decode_key(value)))
    if not ring:
        raise ValueError("no encryption key given")
    return ring


def _local_key(settings: Settings, filename: str) -> str:
    """Development/test only: a random key kept under state_dir (production refuses to start without one)."""
    if settings.environment == "production":
        # Only the services that use a key are given it (deploy/); one that needs it and lacks it stops here.
        raise RuntimeError(f"production needs MKR_{filename.removesuffix('.key').upper()}_KEY for this service")
    path = Path(settings.state_dir) / filename
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = base64.b64encode(os.urandom(32)).decode()
    # Written whole to a private file, then linked into place: a process starting at the same moment sees
    # either no key or the complete one, never an empty file (`mkr run` starts the services together).
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{filename}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(value)
        os.link(temporary, path)
    except FileExistsError:
        return path.read_text().strip()  # another process wrote it first
    finally:
        os.unlink(temporary)
    return value


class FieldCipher:
    """Encrypts and decrypts text values; `context` binds a ciphertext to its row and field (AAD)."""

    def __init__(self, keyring: list[tuple[str, bytes]]) -> None:
        self.current_id, current = keyring[0]
        self._current = AESGCM(current)
        self._all = {kid: AESGCM(key) for kid, key in keyring}

    @classmethod
    def from_settings(cls, settings: Settings) -> FieldCipher:
        raw = settings.encryption_key or _local_key(settings, "encryption.key")
        return cls(parse_keyring(raw))

    def encrypt(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._current.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{self.current_id}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, context: str) -> str:
        kid, sep, body = token.partition(":")
        aead = self._all.get(kid)
        if not sep or aead is None:
            raise DecryptionError("unknown key id")
        try:
            raw = base64.b64decode(body, validate=True)
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()).decode()
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise DecryptionError("ciphertext does not open") from exc


def normalise_name(value: str) -> list[str]:
    """Lower-case, accents dropped (ë→e, ç→c), split into letter tokens."""
    decomposed = unicodedata.normalize("NFKD", value.casefold())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    cleaned = "".join(ch if ch.isalnum() else " " for ch in plain)
    return [token for token in cleaned.split() if token]


def trigrams(tokens: list[str]) -> set[str]:
    """pg_trgm-style trigrams: each token padded with two spaces in front and one behind."""
    grams: set[str] = set()
    for token in tokens:
        padded = f"  {token} "
        grams.update(padded[i : i + 3] for i in range(len(padded) - 2))
    return grams


class SearchIndexer:
    """Keyed trigrams of names: comparable in SQL, not readable back as names.

    `key_id` names the key without revealing it (a short keyed fingerprint); each index row records the
    id it was written under, so `mkr reindex` knows which rows are left. `previous` is the indexer of
    `MKR_INDEX_KEY_PREVIOUS` while the index key changes: read under, never written under. Keyed
    trigrams of two keys never coincide (64-bit HMAC truncations), so a probe under one key only ever
    meets rows written under that key."""

    def __init__(self, key: bytes, previous: SearchIndexer | None = None) -> None:
        self._key = key
        self.key_id = hmac.new(key, b"mkr-index-key-id", hashlib.sha256).hexdigest()[:KEY_ID_CHARS]
        self.previous = previous if previous is not None and previous.key_id != self.key_id else None
        # The keyed state once (its inner and outer pads), copied per value: a name's dozen or more trigrams
        # each cost a copy, not a fresh HMAC set-up (measured 1.3 ms of CPU per report before).
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    @staticmethod
    def _derive(raw: str) -> bytes:
        return hashlib.sha256(b"mkr-index:" + raw.encode()).digest()

    def _mac(self, message: bytes) -> str:
        mac = self._keyed.copy()
        mac.update(message)
        return mac.hexdigest()

    @classmethod
    def from_settings(cls, settings: Settings) -> SearchIndexer:
        raw = settings.index_key or _local_key(settings, "index.key")
        previous = cls(cls._derive(settings.index_key_previous)) if settings.index_key_previous else None
        return cls(cls._derive(raw), previous)

    @property
    def readers(self) -> list[SearchIndexer]:
        """The indexers a search probes with: this one, then the previous key's while it is configured."""
        return [self] if self.previous is None else [self, self.previous]

    def token(self, value: str, scope: str = "") -> str:
        """A keyed hash of one exact value (e.g. a date of birth): equality only."""
        return self._mac(f"value:{scope}:{value}".encode())[:32]

    def keyed(self, text: str, scope: str = "") -> list[str]:
        """Keyed trigrams of a name; `scope` (the municipality) makes sets of two scopes disjoint."""
        grams = trigrams(normalise_name(text))
        return sorted(self._mac(f"{scope}:{gram}".encode())[:16] for gram in grams)


__all__ = ["DecryptionError", "FieldCipher", "SearchIndexer", "normalise_name", "parse_keyring", "trigrams"]
