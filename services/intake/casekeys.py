"""Per-case data keys: each case's personal data and free text are encrypted under a key of its own,
wrapped by the master key (`MKR_ENCRYPTION_KEY`, its key ids and rotation as in shared/crypto.py).

A ciphertext under a case's key reads `case:<base64(nonce ‖ ciphertext ‖ tag)>` (AAD as before: the
case, the field). A case reported before data keys existed keeps its master-key ciphertext
(`k1:...`), which still opens (the lazy path): the case gets its own key the next time one of its
fields is written. Destroying the key row (erasure) makes every copy of the case's ciphertext
unreadable, backups included.
"""

from __future__ import annotations

import base64
import binascii
import os
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake.models import Case, CaseKey
from shared.crypto import NONCE_BYTES, DecryptionError, FieldCipher

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


def unwrap(master: FieldCipher, row: CaseKey) -> bytes:
    return base64.b64decode(master.decrypt(row.wrapped, wrap_context(row.case_id)))


def new_cipher(master: FieldCipher) -> CaseCipher:
    """A cipher with a fresh data key, not stored yet (see `store`)."""
    return CaseCipher(master, os.urandom(32))


def wrapped(cipher: CaseCipher, case_id: uuid.UUID) -> str:
    """The cipher's data key wrapped by the master key (the `case_keys.wrapped` of the case)."""
    assert cipher.data_key is not None
    return cipher.master.encrypt(base64.b64encode(cipher.data_key).decode(), wrap_context(case_id))


def store(session: AsyncSession, cipher: CaseCipher, case_id: uuid.UUID) -> None:
    """Add the cipher's data key, wrapped by the master key, to the caller's transaction (after its case)."""
    session.add(CaseKey(case_id=case_id, wrapped=wrapped(cipher, case_id), created_at=datetime.now(UTC)))


async def new_key(session: AsyncSession, master: FieldCipher, case_id: uuid.UUID) -> CaseCipher:
    """A fresh data key for an existing case, stored wrapped (in the caller's transaction)."""
    cipher = new_cipher(master)
    store(session, cipher, case_id)
    return cipher


async def ciphers(
    session: AsyncSession, master: FieldCipher, case_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, CaseCipher]:
    """The cipher of each case (one query); a case without a key gets the master-key-only cipher."""
    ids = list(dict.fromkeys(case_ids))
    rows = (
        await session.execute(sa.select(CaseKey).where(CaseKey.case_id.in_(ids)))  # type: ignore[attr-defined]
    ).scalars().all() if ids else []
    found = {row.case_id: CaseCipher(master, unwrap(master, row)) for row in rows}
    return {case_id: found.get(case_id, CaseCipher(master, None)) for case_id in ids}


async def cipher_for(session: AsyncSession, master: FieldCipher, case_id: uuid.UUID) -> CaseCipher:
    return (await ciphers(session, master, [case_id]))[case_id]


async def writable(session: AsyncSession, master: FieldCipher, case: Case) -> CaseCipher:
    """The case's cipher for a write. A case of before data keys gets its key now, and its stored
    master-key ciphertext is re-encrypted under it (the lazy path)."""
    cipher = await cipher_for(session, master, case.id)
    if cipher.has_key:
        return cipher
    fresh = await new_key(session, master, case.id)
    if case.erased_at is None:
        for field in ("personal", "close_reason"):
            token = getattr(case, field)
            if token is not None:
                context = f"intake:case:{case.id}:{field}"
                setattr(case, field, fresh.encrypt(cipher.decrypt(token, context), context))
    return fresh


async def destroy(session: AsyncSession, case_id: uuid.UUID) -> None:
    await session.execute(sa.delete(CaseKey).where(CaseKey.case_id == case_id))  # type: ignore[arg-type]
