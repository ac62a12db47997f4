"""The instances a C-MOVE or C-GET sends: from unique keys to stored files (PS3.4 C.4.2, C.4.3).

A retrieve names entities by their unique keys at its level and the levels
above (a :class:`storage.search.Query` whose keys are those only: a patient,
studies, series or instances). Every instance below them that the caller's
:class:`~storage.search.Scope` lets it see is sent: the same
:func:`~storage.search.visible` and :func:`~storage.search.key_conditions`
as C-FIND, so a caller retrieves exactly what it can find (quarantined
studies never).

:func:`instances_to_send` reads the list whole, in one read-only
transaction, before the first sub-operation: the number of sub-operations
and the presentation contexts a destination needs come first (PS3.4
C.4.2.2), and no transaction stays open while files go out. The list is
bounded by ``limit`` (a response counts sub-operations in an US, so 65,535
is the most one retrieve can carry); it holds what a sub-operation needs
and no file content. Instances come study by study, series by series.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, select

from .db import read_connection
from .models import Instance, Patient, Series, Study
from .search import Level, Query, key_conditions, visible

__all__ = ["ToSend", "instances_to_send", "syntaxes_by_class"]


@dataclass(frozen=True, slots=True)
class ToSend:
    """One instance to send: its UIDs, the transfer syntax of its file, the file's store path."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    file_path: str
    study_instance_uid: str


def instances_to_send(engine: Engine, query: Query, *, limit: int) -> list[ToSend]:
    """The instances below the entities ``query`` names, that its scope may see.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The node's engine.
    query : storage.search.Query
        The retrieve level, its unique keys (and those above), the scope.
    limit : int
        At most this many (pass one more than can be sent, to tell that
        there are too many).

    Returns
    -------
    list[ToSend]
        Ordered by study, series and instance number.

    Raises
    ------
    KeyError
        When a key is not an index field.
    sqlalchemy.exc.SQLAlchemyError
        When the index cannot be read.
    """
    dialect = engine.dialect.name
    statement = (
        select(Instance.sop_instance_uid, Instance.sop_class_uid, Instance.transfer_syntax_uid,
               Instance.file_path, Study.study_instance_uid)
        .select_from(Instance)
        .join(Series, Instance.series_fk == Series.id)
        .join(Study, Series.study_fk == Study.id)
        .join(Patient, Study.patient_fk == Patient.id)
        .where(visible(query.scope),
               *key_conditions(Level.IMAGE, query.keys, dialect, scope=query.scope))
        .order_by(Study.id, Series.series_number, Series.id, Instance.instance_number,
                  Instance.id)
        .limit(limit)
    )
    with read_connection(engine) as connection:
        return [ToSend(*row) for row in connection.execute(statement)]


def syntaxes_by_class(instances: Sequence[ToSend]) -> dict[str, list[str]]:
    """SOP Class UID -> the transfer syntaxes its files are stored in, in first-seen order."""
    found: dict[str, list[str]] = {}
    for item in instances:
        syntaxes = found.setdefault(item.sop_class_uid, [])
        if item.transfer_syntax_uid not in syntaxes:
            syntaxes.append(item.transfer_syntax_uid)
    return found
