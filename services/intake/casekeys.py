"""Per-case data keys: each case's personal data and free text are encrypted under a key of its own,
wrapped by the master key (`MKR_ENCRYPTION_KEY`, its key ids and rotation as in shared/crypto.py).

A ciphertext under a case's key reads `case:<base64(nonce ‖ ciphertext ‖ tag)>` (AAD as before: the
case, the field). A case reported before data keys existed keeps its master-key ciphertext
(`k1:...`), which still opens (the lazy path): the case gets its own key the next time one of its
fields is written. The wrapped keys live in the key store (keystore.py), outside intake's data database
and its backups; destroying a key (erasure) makes every copy of the case's ciphertext unreadable,
backups included.
"""

from __future__ import annotations

import base64
import binascii
import os
import uuid
from collections.abc import Iterable
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.intake.keystore import KeyRefused, KeyStore, Tombstone
from services.intake.models import Case
from shared.crypto import NONCE_BYTES, DecryptionError, FieldCipher
from shared.errors import Problem

CASE_KEY_ID = "case"


def wrap_context(case_id: uuid.UUID) -> str:
    return f"intake:case_key:{case_id}"


class CaseCipher:
    """Encrypts under the case's data key; decrypts that, or (older rows) the master key's ciphertext."""

    def __init__(self, master: FieldCipher, data_key: bytes | None) -> None:
        self.master = master
        self.data_key = data_key
        self._aead = AESGCM(data_key) if data_key is not None else None

    @property
    def has_key(self) -> bool:
        return self._aead is not None

    def encrypt(self, plaintext: str, context: str) -> str:
        if self._aead is None:
            raise DecryptionError("the case has no data key")
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{CASE_KEY_ID}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, context: str) -> str:
        kid, sep, body = token.partition(":")
        if kid != CASE_KEY_ID:
            return self.master.decrypt(token, context)
        if not sep or self._aead is None:
            raise DecryptionError("the case's data key is gone")
        try:
            raw = base64.b64decode(body, validate=True)
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()).decode()
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise DecryptionError("ciphertext does not open") from exc


def unwrap(master: FieldCipher, case_id: uuid.UUID, wrapped: str) -> bytes:
    return base64.b64decode(master.decrypt(wrapped, wrap_context(case_id)))


def wrap(master: FieldCipher, data_key: bytes, case_id: uuid.UUID) -> str:
    return master.encrypt(base64.b64encode(data_key).decode(), wrap_context(case_id))


def new_cipher(master: FieldCipher) -> CaseCipher:
    """A cipher with a fresh data key, not stored yet (see `store`)."""
    return CaseCipher(master, os.urandom(32))


async def store(keys: KeyStore, cipher: CaseCipher, case_id: uuid.UUID) -> CaseCipher:
    """Store the cipher's data key, wrapped, in the key store, committed at once: call it *before* the
    data it seals is written (a failed data write leaves a harmless orphan key; keystore.py). If the case
    already has a key (a concurrent writer won) that one is returned; an erased case is refused (409)."""
    assert cipher.data_key is not None
    try:
        stored = await keys.put(case_id, wrap(keys.master, cipher.data_key, case_id))
    except KeyRefused:
        raise Problem(409, "The case is erased.") from None
    return CaseCipher(keys.master, unwrap(keys.master, case_id, stored))


async def new_key(keys: KeyStore, case_id: uuid.UUID) -> CaseCipher:
    """A fresh data key for an existing case, stored wrapped (committed before the caller's data)."""
    return await store(keys, new_cipher(keys.master), case_id)


async def ciphers(keys: KeyStore, case_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, CaseCipher]:
    """The cipher of each case (one query); a case without a key gets the master-key-only cipher."""
    ids = list(dict.fromkeys(case_ids))
    wrapped = await keys.wrapped(ids)
    master = keys.master
    return {case_id: CaseCipher(master, unwrap(master, case_id, wrapped[case_id]) if case_id in wrapped else None)
            for case_id in ids}


async def cipher_for(keys: KeyStore, case_id: uuid.UUID) -> CaseCipher:
    return (await ciphers(keys, [case_id]))[case_id]


async def writable(keys: KeyStore, case: Case) -> CaseCipher:
    """The case's cipher for a write. A case of before data keys gets its key now, and its stored
    master-key ciphertext is re-encrypted under it (the lazy path)."""
    cipher = await cipher_for(keys, case.id)
    if cipher.has_key:
        return cipher
    fresh = await new_key(keys, case.id)
    if case.erased_at is None:
        for field in ("personal", "close_reason"):
            token = getattr(case, field)
            if token is not None and not token.startswith(f"{CASE_KEY_ID}:"):
                context = f"intake:case:{case.id}:{field}"
                setattr(case, field, fresh.encrypt(cipher.decrypt(token, context), context))
    return fresh


async def destroy(keys: KeyStore, case_id: uuid.UUID, *, erased_at: datetime, cause: str) -> None:
    """The case's tombstone written and its key destroyed in the key store, committed at once (before the
    caller erases the data: see keystore.py)."""
    await keys.erase([Tombstone(case_id, erased_at, cause)])
