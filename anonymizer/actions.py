"""The de-identification actions of PS3.15 E.1.1 and how combined codes resolve.

PS3.15 Table E.1-1 gives each attribute one of D, Z, X, K, C, U or a combined
code (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) whose choice "depends on the IOD": X
unless Z or D is required to keep the object conformant (Type 1 or Type 2).
The engine does not carry the IOD module tables, so it resolves combined
codes by the conservative rule that is conformant whatever the IOD and never
keeps an original value:

- X/Z -> Z: an attribute present in the original stays present, empty
  (a Type 1 attribute is never X/Z in the table).
- X/D, Z/D, X/Z/D -> D: a dummy value is valid for Type 1, 2 and 3 alike.
- X/Z/U* (sequences of references) -> U: the sequence is kept and every UID
  inside it is replaced (the rest of its content is de-identified by its own
  rows).

An attribute absent from the original is never created.
"""

from __future__ import annotations

import enum

__all__ = ["Action", "resolve"]


class Action(str, enum.Enum):
    """A de-identification action (PS3.15 E.1.1), after combined codes are resolved."""

    #: replace with a non-zero length dummy value of the same VR
    DUMMY = "D"
    #: replace with a zero length value
    ZERO = "Z"
    #: remove
    REMOVE = "X"
    #: keep
    KEEP = "K"
    #: clean: keep, but remove the instance's own identifiers; shift dates
    CLEAN = "C"
    #: replace UIDs consistently
    UID = "U"


_COMBINED: dict[str, Action] = {
    "X/Z": Action.ZERO,
    "X/D": Action.DUMMY,
    "Z/D": Action.DUMMY,
    "X/Z/D": Action.DUMMY,
    "X/Z/U*": Action.UID,
    "X/Z/U": Action.UID,
}


def resolve(code: str) -> Action:
    """Return the action for a Table E.1-1 code, resolving combined codes.

    Parameters
    ----------
    code : str
        A code from the table: ``D``, ``Z``, ``X``, ``K``, ``C``, ``U`` or a
        combined code.

    Raises
    ------
    ValueError
        For a code that PS3.15 E.1.1 does not define.
    """
    code = code.strip()
    if code in _COMBINED:
        return _COMBINED[code]
    try:
        return Action(code)
    except ValueError:
        raise ValueError(f"unknown PS3.15 E.1.1 action code {code!r}") from None
