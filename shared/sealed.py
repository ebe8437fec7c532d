"""Free text sealed at rest (CONTRACT §3): notes, reasons, outcomes and plan actions as AES-256-GCM
ciphertext under the same keys as names (shared/crypto.py).

Each ciphertext is bound to its service, table, row and field (the AAD), so a value copied to another
row or column does not open. A value no configured key opens reads as None (and is logged without
its content), never as a failed answer.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy import Connection

from shared.crypto import DecryptionError, FieldCipher
from shared.settings import Settings

log = logging.getLogger("mkr.sealed")


class TextSealer:
    def __init__(self, cipher: FieldCipher, service: str) -> None:
        self.cipher = cipher
        self.service = service

    @classmethod
    def from_settings(cls, settings: Settings, service: str) -> TextSealer:
        return cls(FieldCipher.from_settings(settings), service)

    def context(self, table: str, row_id: uuid.UUID | str, field: str) -> str:
        return f"{self.service}:{table}:{row_id}:{field}"

    def seal(self, table: str, row_id: uuid.UUID | str, field: str, value: str | None) -> str | None:
        if value is None:
            return None
        return self.cipher.encrypt(value, self.context(table, row_id, field))

    def open(self, table: str, row_id: uuid.UUID | str, field: str, token: str | None) -> str | None:
        if token is None:
            return None
        try:
            return self.cipher.decrypt(token, self.context(table, row_id, field))
        except DecryptionError:
            log.warning("sealed text does not open", extra={"error_class": "DecryptionError", "field": field})
            return None

    def is_sealed(self, table: str, row_id: uuid.UUID | str, field: str, token: str) -> bool:
        """Whether `token` already is this field's ciphertext (migrations seal each value once)."""
        try:
            self.cipher.decrypt(token, self.context(table, row_id, field))
        except DecryptionError:
            return False
        return True




def seal_stored(connection: Connection, sealer: TextSealer, table: str, fields: Sequence[str]) -> int:
    """A data migration's step: seal every plaintext value of `fields` in `table` (rows keyed by `id`).
    Values that already open as this field's ciphertext stay as they are, so the step can run twice."""
    sealed = 0
    for field in fields:
        rows = connection.execute(
            sa.text(f"SELECT id, {field} AS value FROM {table} WHERE {field} IS NOT NULL")
        ).all()
        for row in rows:
            if sealer.is_sealed(table, row.id, field, row.value):
                continue
            connection.execute(
                sa.text(f"UPDATE {table} SET {field} = :value WHERE id = :id"),
                {"value": sealer.seal(table, row.id, field, row.value), "id": row.id},
            )
            sealed += 1
    return sealed


__all__ = ["TextSealer", "seal_stored"]
