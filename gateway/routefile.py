"""Routes as a TOML file, to keep them under version control (``route export`` / ``import``).

One ``[[route]]`` table per route, in evaluation order::

    [[route]]
    name = "ct-from-clinic-a"
    enabled = true
    priority = 10
    destinations = ["institute-a"]
    conditions = ["SendingPeer=clinic-a", "ModalitiesInStudy=CT"]

``enabled`` (default true), ``priority`` (default 100) and ``conditions``
(default none) may be left out; ``name`` and ``destinations`` may not.
Times are not exported: a file is the definition, so exporting, importing
and exporting again gives the same text. Read with the standard library's
``tomllib``; written here (strings escaped for TOML basic strings), so no
extra dependency is needed. The values themselves are checked by
:mod:`storage.routes` when the file is imported.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from typing import Any, Final

from storage.routes import DEFAULT_PRIORITY, RouteSpec

__all__ = ["RouteFileError", "dumps", "loads"]

_KEYS: Final = ("name", "enabled", "priority", "destinations", "conditions")
_HEADER: Final = ("# dicom-gateway routes, evaluated by ascending priority, then name.\n"
                  "# Apply with: dicom-gateway route import FILE [--replace]\n")


class RouteFileError(ValueError):
    """The file is not TOML, or not a list of routes; the message says where."""


def _string(value: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = ['"']
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _strings(values: Iterable[str]) -> str:
    return "[" + ", ".join(_string(value) for value in values) + "]"


def dumps(routes: Iterable[RouteSpec]) -> str:
    """The TOML text of ``routes``, in the order given (see the module notes)."""
    parts = [_HEADER]
    for route in routes:
        parts.append(
            "\n[[route]]\n"
            f"name = {_string(route.name)}\n"
            f"enabled = {'true' if route.enabled else 'false'}\n"
            f"priority = {route.priority}\n"
            f"destinations = {_strings(route.destinations)}\n"
            f"conditions = {_strings(route.conditions)}\n"
        )
    return "".join(parts)


def loads(text: str, source: str) -> list[RouteSpec]:
    """Read routes from TOML text.

    Parameters
    ----------
    text : str
        The file's content.
    source : str
        The file's name, for messages.

    Returns
    -------
    list[RouteSpec]
        In file order; not yet checked against the database.

    Raises
    ------
    RouteFileError
        When the text is not TOML, has keys other than ``route``, or a
        route's key is unknown, missing or of the wrong type. The message
        names the file, the route and the key.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RouteFileError(f"{source}: expected TOML, {exc}") from None
    extra = sorted(set(document) - {"route"})
    if extra:
        raise RouteFileError(f"{source}: expected only [[route]] tables, got {', '.join(extra)}")
    tables = document.get("route", [])
    if not isinstance(tables, list):
        raise RouteFileError(f"{source}: route: expected [[route]] tables, got a single value")
    return [_spec(table, f"{source}: route #{index}") for index, table in
            enumerate(tables, start=1)]


def _spec(table: Any, where: str) -> RouteSpec:
    if not isinstance(table, Mapping):
        raise RouteFileError(f"{where}: expected a table, got {type(table).__name__}")
    name = table.get("name")
    if isinstance(name, str):
        where = f"{where} ({name})"
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise RouteFileError(f"{where}: unknown key {', '.join(unknown)}; expected "
                             f"{', '.join(_KEYS)}")
    if not isinstance(name, str):
        raise RouteFileError(f"{where}: name: expected a string, got {_shown(name)}")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RouteFileError(f"{where}: enabled: expected true or false, got {_shown(enabled)}")
    priority = table.get("priority", DEFAULT_PRIORITY)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise RouteFileError(f"{where}: priority: expected an integer, got {_shown(priority)}")
    if "destinations" not in table:
        raise RouteFileError(f"{where}: destinations: expected a list of peer slugs, "
                             "got nothing")
    return RouteSpec(name=name, enabled=enabled, priority=priority,
                     destinations=_list(table["destinations"], where, "destinations"),
                     conditions=_list(table.get("conditions", []), where, "conditions"))


def _list(value: Any, where: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RouteFileError(f"{where}: {key}: expected a list of strings, got {_shown(value)}")
    return tuple(value)


def _shown(value: Any) -> str:
    return "nothing" if value is None else repr(value)
