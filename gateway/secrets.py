"""The de-identification secret: where it lives and how it is read.

Pseudonyms, UID replacements and date offsets are HMACs under one secret
(PS3.15 E.1: consistent replacement; the secret keeps them unlinkable to the
originals). It is never stored in the database or the config file: it comes
from the environment variable named by ``anonymizer.key_env`` when that is
set, otherwise from the file ``anonymizer.key_file``, which is created on
first use with 32 random bytes, readable by its owner only (mode 0600).
Losing the secret means new pseudonyms for returning patients; back it up
with the data folder.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from .errors import GatewayError

__all__ = ["SecretError", "load_key"]

logger = logging.getLogger(__name__)

_MIN_KEY_BYTES = 16


class SecretError(GatewayError):
    """The secret cannot be read or is too short."""

    exit_code = 2


def _decode(text: str, where: str) -> bytes:
    text = text.strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = text.encode("utf-8")
    if len(key) < _MIN_KEY_BYTES:
        raise SecretError(
            f"{where}: expected at least {_MIN_KEY_BYTES} bytes of secret "
            f"(64 hex digits recommended), got {len(key)}"
        )
    return key


def load_key(key_env: str, key_file: Path, environ: Mapping[str, str]) -> bytes:
    """Return the secret, creating the key file on first use.

    Parameters
    ----------
    key_env : str
        Name of the environment variable that may hold the secret (hex or text).
    key_file : Path
        The file that holds it otherwise (hex), created 0600 when missing.
    environ : Mapping
        The process environment.

    Raises
    ------
    SecretError
        When the secret is too short or the file cannot be read or created.
    """
    if key_env and environ.get(key_env):
        return _decode(environ[key_env], key_env)
    try:
        return _decode(key_file.read_text(encoding="ascii"), str(key_file))
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(
            f"{key_file}: cannot read the secret ({exc.__class__.__name__})"
        ) from None
    # written under a temporary name, then linked into place: a node starting at the same
    # moment (several nodes on one data folder) reads either no file or the whole key
    key = secrets.token_bytes(32)
    temporary = key_file.with_name(f".{key_file.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(key.hex() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.link(temporary, key_file)
    except FileExistsError:  # another process created it meanwhile
        return _decode(key_file.read_text(encoding="ascii"), str(key_file))
    except OSError as exc:
        raise SecretError(f"{key_file}: cannot create the secret ({exc.strerror})") from None
    finally:
        temporary.unlink(missing_ok=True)
    logger.warning("secret created path=%s (back it up with the data folder)", key_file)
    return key
