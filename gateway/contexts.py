"""Presentation contexts built once and shared by every association (pynetdicom 3.0).

pynetdicom's ``RequestHandler._create_association`` gives each accepted
association ``deepcopy(server.contexts)``. With every storage SOP class and
a dozen transfer syntaxes that is some 2,000 objects, each UID re-validated
by pydicom as it is copied: most of the CPU an association costs before its
first message (and of a C-ECHO's round trip). Negotiation as acceptor
(``pynetdicom.presentation.negotiate_as_acceptor``, PS3.8 9.3.3.2 and
Annex D.3.3.4) only reads the supported contexts and builds new ones for
its answer, so the copy protects nothing here.

:class:`SharedContexts` is the list handed to ``AE.start_server``: its
``__deepcopy__`` returns a plain list of the same, never-modified context
objects. Nothing else changes. ``tests/unit/test_contexts.py`` pins the
pynetdicom version this was checked against and that negotiation still only
reads them; the change could be offered upstream as a shallow copy in
``_create_association``.
"""

from __future__ import annotations

from typing import Any

from pynetdicom.presentation import PresentationContext

__all__ = ["CHECKED_PYNETDICOM", "SharedContexts"]

#: the pynetdicom release line whose acceptor negotiation was read for this
CHECKED_PYNETDICOM = "3.0"


class SharedContexts(list[PresentationContext]):
    """The supported contexts, shared instead of deep-copied per association."""

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        return list(self)
