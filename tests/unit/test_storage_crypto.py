"""MapCipher: AES-GCM sealing of pseudonym-map originals (ARCHITECTURE.md, privacy model)."""

from __future__ import annotations

import pytest

from storage.crypto import MapCipher
from storage.errors import StorageError

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def test_seal_then_open_gives_the_original() -> None:
    cipher = MapCipher(KEY)
    sealed = cipher.seal("Doe^Jane-ÄÖ")
    assert cipher.open(sealed) == "Doe^Jane-ÄÖ"
    assert b"Doe" not in sealed
    assert len(sealed) == 12 + len("Doe^Jane-ÄÖ".encode()) + 16


def test_sealing_twice_uses_fresh_nonces() -> None:
    cipher = MapCipher(KEY)
    first, second = cipher.seal("PAT-1"), cipher.seal("PAT-1")
    assert first != second
    assert first[:12] != second[:12]


def test_wrong_key_fails() -> None:
    sealed = MapCipher(KEY).seal("PAT-1")
    with pytest.raises(StorageError, match="wrong key, or the data was altered"):
        MapCipher(OTHER_KEY).open(sealed)


@pytest.mark.parametrize("position", [0, 12, -1])
def test_tampering_fails(position: int) -> None:
    cipher = MapCipher(KEY)
    sealed = bytearray(cipher.seal("PAT-1"))
    sealed[position] ^= 0x01
    with pytest.raises(StorageError, match="cannot be opened"):
        cipher.open(bytes(sealed))


def test_associated_data_binds_the_value_to_its_row() -> None:
    cipher = MapCipher(KEY)
    sealed = cipher.seal("PAT-1", associated=b"patient:P1")
    assert cipher.open(sealed, associated=b"patient:P1") == "PAT-1"
    with pytest.raises(StorageError):
        cipher.open(sealed, associated=b"patient:P2")


def test_truncated_value_fails() -> None:
    with pytest.raises(StorageError, match="too short"):
        MapCipher(KEY).open(b"\x00" * 27)


@pytest.mark.parametrize("key", [b"", b"\x00" * 16, b"\x00" * 33])
def test_key_must_be_32_bytes(key: bytes) -> None:
    with pytest.raises(StorageError, match="expected 32 bytes, got"):
        MapCipher(key)


def test_repr_hides_the_key() -> None:
    assert KEY.hex() not in repr(MapCipher(KEY))
