"""Small value validators for the configuration, each returning ``(ok, reason)``.

Every check takes an already type-converted value and answers whether it
conforms, with a short reason when it does not (``""`` when it does), in the
manner of pynetdicom's ``_validators.py``. The loader turns a failed check
into one problem line; these functions never raise for a bad value.
"""

from __future__ import annotations

import ipaddress
import json
import re
import unicodedata
from collections.abc import Callable, Collection, Sequence

__all__ = [
    "check_ae_title",
    "check_choice",
    "check_choices",
    "check_database_url",
    "check_each",
    "check_env_name",
    "check_int_range",
    "check_ip_address",
    "check_path",
    "check_private_creator",
    "check_pseudonym_prefix",
    "check_syslog_url",
    "check_uid",
    "check_uid_root",
]

Check = tuple[bool, str]

_OK: Check = (True, "")
_UID_COMPONENT = re.compile(r"0|[1-9][0-9]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PSEUDONYM_PREFIX = re.compile(r"[A-Z0-9]{1,8}")
_DATABASE_SCHEMES = ("sqlite://", "postgresql+psycopg://")
_SYSLOG_URL = re.compile(r"udp://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>[0-9]{1,5})")


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _has_control(value: str) -> bool:
    return any(unicodedata.category(c).startswith("C") for c in value)


def check_ae_title(value: str) -> Check:
    """Check an AE title (PS3.5 Table 6.2-1, value representation AE).

    Parameters
    ----------
    value : str
        The AE title as configured.

    Returns
    -------
    tuple[bool, str]
        ``(True, "")`` for 1-16 ASCII characters without backslash or
        control characters and not only spaces, else ``(False, reason)``.
    """
    if not value.strip(" "):
        return False, "it is empty or only spaces"
    if len(value) > 16:
        return False, f"it is {len(value)} characters long"
    if not value.isascii():
        return False, "it has non-ASCII characters"
    if "\\" in value or _has_control(value):
        return False, "it has a backslash or a control character"
    return _OK


def check_int_range(value: int, low: int, high: int) -> Check:
    """Check that ``low <= value <= high``.

    Parameters
    ----------
    value : int
        The number to check.
    low, high : int
        The inclusive bounds.

    Returns
    -------
    tuple[bool, str]
        ``(True, "")`` inside the bounds, else ``(False, "")``: the expected
        text already states the bounds.
    """
    return _OK if low <= value <= high else (False, "")


def check_ip_address(value: str) -> Check:
    """Check an IPv4 or IPv6 address literal (a host name is not accepted).

    Parameters
    ----------
    value : str
        The address as configured, for example ``"127.0.0.1"`` or ``"::"``.

    Returns
    -------
    tuple[bool, str]
        ``(True, "")`` when :func:`ipaddress.ip_address` accepts it.
    """
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False, ""
    return _OK


def check_uid(value: str) -> Check:
    """Check a UID (PS3.5 section 9.1): digits and dots, at most 64 characters.

    Each dot-separated component is non-empty and has no leading zero
    (``0`` alone is allowed).

    Parameters
    ----------
    value : str
        The UID to check.

    Returns
    -------
    tuple[bool, str]
        ``(True, "")`` for a conformant UID, else ``(False, reason)``.
    """
    if not value:
        return False, "it is empty"
    if len(value) > 64:
        return False, f"it is {len(value)} characters long"
    for component in value.split("."):
        if not _UID_COMPONENT.fullmatch(component):
            if not component:
                return False, "it has an empty component"
            if component.isdigit():
                return False, f"component {component} has a leading zero"
            return False, "it has characters other than digits and dots"
    return _OK


def check_uid_root(value: str) -> Check:
    """Check a UID root for new UIDs: a UID followed by a dot, at most 40 characters.

    The rest of the 64 characters (PS3.5 9.1) is left for what is appended.
    """
    if not value.endswith("."):
        return False, "it does not end with a dot"
    if len(value) > 40:
        return False, f"it is {len(value)} characters long"
    return check_uid(value[:-1])


def check_each(values: Sequence[str], check: Callable[[str], Check]) -> Check:
    """Apply ``check`` to every item of a list.

    Parameters
    ----------
    values : Sequence[str]
        The list as configured.
    check : Callable[[str], tuple[bool, str]]
        The check for one item, for example :func:`check_uid`.

    Returns
    -------
    tuple[bool, str]
        The first failure, naming the item's 1-based position and value, or
        ``(True, "")``.
    """
    for index, value in enumerate(values, start=1):
        ok, reason = check(value)
        if not ok:
            detail = f": {reason}" if reason else ""
            return False, f"item {index} ({_quote(value)}) is not valid{detail}"
    return _OK


def check_choice(value: str, choices: Collection[str]) -> Check:
    """Check that ``value`` is one of ``choices``.

    Returns
    -------
    tuple[bool, str]
        ``(True, "")`` when it is, else ``(False, "")``: the expected text
        already lists the choices.
    """
    return _OK if value in choices else (False, "")


def check_choices(values: Sequence[str], choices: Collection[str]) -> Check:
    """Check that every item is one of ``choices`` and none repeats.

    Returns
    -------
    tuple[bool, str]
        The first unknown or repeated item, or ``(True, "")``.
    """
    seen: set[str] = set()
    for value in values:
        if value not in choices:
            return False, f"{_quote(value)} is not one of them"
        if value in seen:
            return False, f"{_quote(value)} is listed twice"
        seen.add(value)
    return _OK


def check_path(value: str) -> Check:
    """Check a filesystem path as configured (before it is resolved).

    Returns
    -------
    tuple[bool, str]
        ``(False, reason)`` for an empty path or one with a NUL character.
    """
    if not value.strip():
        return False, "it is empty"
    if "\0" in value:
        return False, "it has a NUL character"
    return _OK


def check_optional_path(value: str) -> Check:
    """Check a path that may be left empty (``""``: not configured)."""
    return check_path(value) if value else _OK


def check_syslog_url(value: str) -> Check:
    """Check an audit syslog target: empty (off) or ``udp://HOST:PORT`` (RFC 5426).

    Returns
    -------
    tuple[bool, str]
        ``(True, "")`` for ``""`` or a UDP URL with a host and a port 1-65535.
    """
    if value == "":
        return _OK
    found = _SYSLOG_URL.fullmatch(value)
    if found is None:
        return False, ""
    if not 1 <= int(found["port"]) <= 65535:
        return False, "the port is outside 1-65535"
    return _OK


def check_database_url(value: str) -> Check:
    """Check a database URL: empty (the SQLite default) or a supported scheme.

    Returns
    -------
    tuple[bool, str]
        ``(True, "")`` for ``""`` or a URL starting with ``sqlite://`` or
        ``postgresql+psycopg://``.
    """
    if value == "" or value.startswith(_DATABASE_SCHEMES):
        return _OK
    return False, ""


def check_pseudonym_prefix(value: str) -> Check:
    """Check a pseudonym prefix: 1-8 characters from A-Z and 0-9."""
    return _OK if _PSEUDONYM_PREFIX.fullmatch(value) else (False, "")


def check_env_name(value: str) -> Check:
    """Check the name of an environment variable that holds a secret.

    A name shaped like a configuration key (``DICOM_GATEWAY_X__Y``) is
    refused: the loader would read that variable as a key, not a secret.
    """
    if not _ENV_NAME.fullmatch(value):
        return False, ""
    if value.startswith("DICOM_GATEWAY_") and "__" in value:
        return False, "names shaped DICOM_GATEWAY_<SECTION>__<KEY> are configuration keys"
    return _OK


def check_private_creator(value: str) -> Check:
    """Check a private creator string (value representation LO, PS3.5 6.2).

    Returns
    -------
    tuple[bool, str]
        ``(True, "")`` for 1-64 characters without backslash or control
        characters.
    """
    if not value.strip(" "):
        return False, "it is empty or only spaces"
    if len(value) > 64:
        return False, f"it is {len(value)} characters long"
    if "\\" in value or _has_control(value):
        return False, "it has a backslash or a control character"
    return _OK
