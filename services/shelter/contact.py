"""A shelter's address and phone are secret locations: encrypted at rest (AES-256-GCM, shared/crypto.py).

Each ciphertext is bound to its shelter and field (AAD `shelter:<id>:<field>`), so a value copied to
another row or column does not open.
"""

from __future__ import annotations

import logging
import uuid

from shared.crypto import DecryptionError, FieldCipher

log = logging.getLogger("mkr.shelter")


class ContactSealer:
    def __init__(self, cipher: FieldCipher) -> None:
        self.cipher = cipher

    @staticmethod
    def _context(shelter_id: uuid.UUID, field: str) -> str:
        return f"shelter:{shelter_id}:{field}"

    def seal(self, shelter_id: uuid.UUID, field: str, value: str) -> str:
        return self.cipher.encrypt(value, self._context(shelter_id, field))

    def open(self, shelter_id: uuid.UUID, field: str, token: str) -> str | None:
        """The plaintext, or None when no configured key opens it (then the field is left out)."""
        try:
            return self.cipher.decrypt(token, self._context(shelter_id, field))
        except DecryptionError:
            log.warning("shelter contact does not decrypt", extra={"error_class": "DecryptionError"})
            return None
