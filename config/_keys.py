"""The known keys: each one's type, expected-value text and check; value conversion.

``SPECS`` is the single list of sections and keys the loader accepts (the
schema dataclasses and ``default.toml`` carry the same names, and a test holds
the three together). ``coerce`` turns a value as given into the key's type:
TOML values must already have it, while environment and command-line strings
are parsed (integers, booleans as true/false/1/0/yes/no, lists as a TOML array
or comma-separated). ``show`` renders a value as given for a problem line.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path
from typing import Any, Literal

from ._checks import (
    Check,
    check_ae_title,
    check_choice,
    check_choices,
    check_database_url,
    check_each,
    check_env_name,
    check_int_range,
    check_ip_address,
    check_optional_path,
    check_path,
    check_private_creator,
    check_pseudonym_prefix,
    check_syslog_url,
    check_uid,
    check_uid_root,
)
from .schema import ANONYMIZER_OPTIONS, redact_url

__all__ = ["LOG_LEVELS", "SPECS", "Given", "Invalid", "Kind", "Spec", "coerce", "show"]

#: The accepted values of ``logging.level`` (any letter case).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_BOOL_TEXT = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}

Kind = Literal["str", "int", "bool", "path", "list"]


@dataclass(frozen=True, slots=True)
class Spec:
    """One key's type, the text after "expected" in a problem line, and its check."""

    kind: Kind
    expected: str
    check: Callable[[Any], Check] | None = None


@dataclass(frozen=True, slots=True)
class Given:
    """A value as one layer gave it, and where from (a path, a variable, a flag)."""

    value: object
    source: str
    is_text: bool  # a string to parse (environment, flags), not a typed TOML value


class Invalid(Exception):
    """A value does not have its key's type; ``reason`` may add a detail."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


SPECS: dict[str, dict[str, Spec]] = {
    "node": {
        "ae_title": Spec(
            "str",
            "an AE title (1-16 ASCII characters, no backslash or control characters, "
            "not only spaces)",
            check_ae_title,
        ),
        "uid_root": Spec(
            "str",
            "a UID root: digits and dots, ending with a dot, at most 40 characters",
            check_uid_root,
        ),
    },
    "listener": {
        "bind": Spec("str", "an IP address such as 127.0.0.1 or ::", check_ip_address),
        "port": Spec("int", "an integer 1-65535", lambda v: check_int_range(v, 1, 65535)),
        "processes": Spec("int", "an integer 0-64 (0: one per CPU core)",
                          lambda v: check_int_range(v, 0, 64)),
    },
    "tls": {
        "enabled": Spec("bool", "true or false"),
        "port": Spec("int", "an integer 1-65535", lambda v: check_int_range(v, 1, 65535)),
        "certificate": Spec("str", 'a PEM file path, or "" when TLS is off', check_optional_path),
        "private_key": Spec("str", 'a PEM file path, or "" when TLS is off', check_optional_path),
        "ca_certificates": Spec(
            "str", 'a PEM file path, or "" for the system\'s trusted authorities',
            check_optional_path),
        "require_client_certificate": Spec("bool", "true or false"),
        "plain_listener": Spec("bool", "true or false"),
        "handshake_timeout": Spec("int", "seconds, 1-300", lambda v: check_int_range(v, 1, 300)),
    },
    "storage": {
        "data_dir": Spec("path", "a folder path", check_path),
        "spool_dir": Spec("str", 'a folder path, or "" for data_dir/spool', check_optional_path),
    },
    "database": {
        "url": Spec(
            "str",
            '"" (SQLite in storage.data_dir) or a URL starting with sqlite:// or '
            "postgresql+psycopg://",
            check_database_url,
        ),
    },
    "anonymizer": {
        "options": Spec(
            "list",
            "a list of options from " + ", ".join(ANONYMIZER_OPTIONS),
            lambda v: check_choices(v, ANONYMIZER_OPTIONS),
        ),
        "safe_private_creators": Spec(
            "list",
            "a list of private creator strings (1-64 characters, no backslash or "
            "control characters)",
            lambda v: check_each(v, check_private_creator),
        ),
        "risky_sop_classes": Spec(
            "list",
            "a list of UIDs (digits and dots, no leading zeros, at most 64 characters)",
            lambda v: check_each(v, check_uid),
        ),
        "pseudonym_prefix": Spec("str", "1-8 characters from A-Z and 0-9", check_pseudonym_prefix),
        "key_env": Spec(
            "str",
            "an environment variable name (letters, digits and underscores, "
            "not starting with a digit)",
            check_env_name,
        ),
        "key_file": Spec("path", "a file path", check_path),
        "residual_phi_gate": Spec("bool", "true or false"),
        "max_sequence_depth": Spec(
            "int", "an integer 1-1000", lambda v: check_int_range(v, 1, 1000)
        ),
    },
    "limits": {
        "max_associations": Spec(
            "int", "an integer 1-1000", lambda v: check_int_range(v, 1, 1000)
        ),
        "acse_timeout": Spec("int", "seconds, 1-3600", lambda v: check_int_range(v, 1, 3600)),
        "dimse_timeout": Spec("int", "seconds, 1-3600", lambda v: check_int_range(v, 1, 3600)),
        "network_timeout": Spec(
            "int", "seconds, 1-3600", lambda v: check_int_range(v, 1, 3600)
        ),
        "max_pdu": Spec(
            "int", "bytes, 4096-16777216", lambda v: check_int_range(v, 4096, 16777216)
        ),
        "max_dataset_mb": Spec(
            "int", "megabytes, 1-1048576", lambda v: check_int_range(v, 1, 1048576)
        ),
    },
    "policy": {
        "loopback_store_open": Spec("bool", "true or false"),
        "store_open": Spec("bool", "true or false"),
    },
    "ingest": {
        "workers": Spec("int", "an integer 0-64 (0: one fewer than the CPU cores, at least 1)",
                        lambda v: check_int_range(v, 0, 64)),
        "nice": Spec("int", "an integer 0-19", lambda v: check_int_range(v, 0, 19)),
    },
    "query": {
        "max_results": Spec(
            "int", "an integer 1-1000000", lambda v: check_int_range(v, 1, 1000000)
        ),
    },
    "forward": {
        "max_attempts": Spec("int", "an integer 1-1000", lambda v: check_int_range(v, 1, 1000)),
        "first_delay_seconds": Spec(
            "int", "seconds, 1-86400", lambda v: check_int_range(v, 1, 86400)),
        "backoff_multiplier": Spec(
            "int", "an integer 1-10", lambda v: check_int_range(v, 1, 10)),
        "max_delay_seconds": Spec(
            "int", "seconds, 1-604800", lambda v: check_int_range(v, 1, 604800)),
        "lease_seconds": Spec("int", "seconds, 10-86400", lambda v: check_int_range(v, 10, 86400)),
        "poll_seconds": Spec("int", "seconds, 1-3600", lambda v: check_int_range(v, 1, 3600)),
        "stable_after_seconds": Spec(
            "int", "seconds, 0-86400", lambda v: check_int_range(v, 0, 86400)),
        "commit_timeout_seconds": Spec(
            "int", "seconds, 1-3600", lambda v: check_int_range(v, 1, 3600)),
        "max_workers": Spec("int", "an integer 1-64", lambda v: check_int_range(v, 1, 64)),
    },
    "audit": {
        "syslog": Spec("str", '"" (off) or udp://HOST:PORT', check_syslog_url),
    },
    "status": {
        "min_free_disk_mb": Spec(
            "int", "megabytes, 0-1048576", lambda v: check_int_range(v, 0, 1048576)),
        "max_failed_jobs": Spec(
            "int", "an integer 0-1000000", lambda v: check_int_range(v, 0, 1000000)),
        "max_pending_age_seconds": Spec(
            "int", "seconds, 0-31536000 (0: no limit)", lambda v: check_int_range(v, 0, 31536000)),
        "max_spool_depth": Spec(
            "int", "an integer 0-100000000 (0: no limit)",
            lambda v: check_int_range(v, 0, 100000000)),
    },
    "logging": {
        "level": Spec(
            "str",
            "one of " + ", ".join(LOG_LEVELS),
            lambda v: check_choice(v.upper(), LOG_LEVELS),
        ),
    },
}


def coerce(kind: Kind, item: Given) -> object:
    """Convert a value as given to ``kind``.

    Parameters
    ----------
    kind : {"str", "int", "bool", "path", "list"}
        The key's type; a ``"path"`` stays a string here, and a ``"list"``
        becomes a tuple of strings.
    item : Given
        The value and whether it is text to parse.

    Returns
    -------
    object
        The converted value.

    Raises
    ------
    Invalid
        When the value is not of, and (for text) does not parse as, ``kind``.
    """
    value = item.value
    if kind == "str" or kind == "path":
        if isinstance(value, str):
            return value
        if kind == "path" and isinstance(value, Path):
            return str(value)
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if item.is_text and isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
            return int(value.strip())
    elif kind == "bool":
        if isinstance(value, bool):
            return value
        if item.is_text and isinstance(value, str) and value.strip().lower() in _BOOL_TEXT:
            return _BOOL_TEXT[value.strip().lower()]
    elif kind == "list":
        if item.is_text and isinstance(value, str):
            value = _parse_text_list(value)
        if isinstance(value, list | tuple):
            for index, element in enumerate(value, start=1):
                if not isinstance(element, str):
                    raise Invalid(f"item {index} is not a string")
            return tuple(value)
    raise Invalid()


def _parse_text_list(text: str) -> list[object]:
    """Parse ``'["a", "b"]'`` (a TOML array) or ``"a, b"`` (comma-separated)."""
    text = text.strip()
    if text.startswith("["):
        try:
            parsed = tomllib.loads(f"value = {text}")["value"]
        except tomllib.TOMLDecodeError:
            raise Invalid("it is not a valid TOML array") from None
        return list(parsed) if isinstance(parsed, list) else [parsed]
    return [part.strip() for part in text.split(",") if part.strip()]


def show(value: object) -> str:
    """Render a value as given, in TOML-like syntax, with URL passwords redacted.

    Strings are double-quoted (``"11112a"``), booleans are ``true``/``false``,
    lists are ``[...]``.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return json.dumps(redact_url(str(value)), ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(element) for element in value) + "]"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value)
