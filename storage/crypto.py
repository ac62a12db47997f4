"""``MapCipher``: the pseudonym map's originals, sealed with AES-GCM.

ARCHITECTURE.md, privacy model: the originals behind pseudonyms are encrypted
with a key kept outside the database, so that a copy of the database alone
identifies no one. The sealed form is ``nonce (12 random bytes) ||
ciphertext || tag (16 bytes)`` (NIST SP 800-38D via ``cryptography``'s
``AESGCM``). Optional associated data binds a sealed value to its row (the
pseudonym map uses ``kind:pseudonym``), so a value copied onto another row
no longer opens.
"""

from __future__ import annotations

import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import StorageError

__all__ = ["KEY_BYTES", "MapCipher"]

#: AES-256: the key is 32 bytes.
KEY_BYTES: Final = 32
_NONCE_BYTES: Final = 12
_TAG_BYTES: Final = 16


class MapCipher:
    """Seal and open pseudonym-map originals under one 32-byte key.

    Parameters
    ----------
    key : bytes
        32 bytes from outside the database (the node's secret store).

    Raises
    ------
    StorageError
        When the key is not 32 bytes.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise StorageError(
                f"pseudonym map key: expected {KEY_BYTES} bytes, got "
                f"{len(key) if isinstance(key, bytes) else type(key).__name__}"
            )
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "MapCipher(<key hidden>)"

    def seal(self, original: str, *, associated: bytes = b"") -> bytes:
        """Encrypt ``original`` under a fresh random nonce.

        Parameters
        ----------
        original : str
            The identifying value (UTF-8 encoded before sealing).
        associated : bytes
            Authenticated but not encrypted context; :meth:`open` needs the
            same bytes.

        Returns
        -------
        bytes
            ``nonce || ciphertext || tag``; sealing the same value twice
            gives different bytes.
        """
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, original.encode("utf-8"), associated)

    def open(self, sealed: bytes, *, associated: bytes = b"") -> str:
        """Decrypt a value made by :meth:`seal` with the same key and context.

        Parameters
        ----------
        sealed : bytes
            ``nonce || ciphertext || tag``.
        associated : bytes
            The context given to :meth:`seal`.

        Returns
        -------
        str
            The original value.

        Raises
        ------
        StorageError
            When the key is wrong, the bytes were altered, or they were
            sealed for another context.
        """
        if len(sealed) < _NONCE_BYTES + _TAG_BYTES:
            raise StorageError("pseudonym map value: too short to be sealed data")
        nonce, body = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        try:
            plain = self._aead.decrypt(nonce, body, associated)
        except InvalidTag as exc:
            raise StorageError(
                "pseudonym map value: cannot be opened (wrong key, or the data was altered)"
            ) from exc
        return plain.decode("utf-8")
