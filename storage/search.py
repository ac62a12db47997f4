"""Compile a C-FIND query into one SQL SELECT and stream its rows (PS3.4 C.4.1, C.6).

:class:`Query` is a level and a key per index field (:data:`FIELDS`, named
after DICOM keywords in snake_case). :func:`compile_query` puts every match
into the ``WHERE`` (:mod:`storage.conditions` translates each kind of PS3.4
C.2.2.2 matching), so nothing is filtered in Python after rows are read.
What is particular to the index:

- ModalitiesInStudy and SOPClassesInStudy match through ``EXISTS`` on the
  study's series (Modality) and instances (SOP Class UID): one matching
  series is enough, and several values match any (PS3.4 C.6.1.1.4);
- with combined date-time matching (negotiated, PS3.4 C.2.2.2.5) a
  StudyDate and a StudyTime range match as one ``YYYYMMDDHHMMSS`` range on
  the two columns joined; otherwise each matches on its own;
- the query joins down from patient to the query level (hierarchical, PS3.4
  C.4.1.3.1); only ``active`` studies are seen (quarantined ones are held
  from every caller) and only those in the caller's :class:`Scope`;
- computed keys come from the counts and sets the index keeps per study and
  series; the patient-level counts are correlated sub-queries over the
  studies the caller may see.

There is no ``ORDER BY`` (PS3.4 defines no order of C-FIND responses): a
sort would make every query read all its matches before the first one is
sent, and it would push the planner to scan the query level's table in
key order instead of starting from the most selective index.
:func:`stream` yields rows as the cursor delivers them (on PostgreSQL as
the server sends them, without a server-side cursor), so the first result
is sent before the last match is read.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Engine,
    Select,
    SQLColumnExpression,
    and_,
    exists,
    false,
    func,
    select,
    true,
)
from sqlalchemy.orm import aliased

from ._sql import stream_postgresql
from .conditions import match_condition, range_condition, time_of
from .db import read_connection
from .matching import Match, Range, Single, Universal, ValueKind
from .models import Instance, Patient, PeerScope, Series, Study, StudyState
from .queue_models import ForwardJob, JobKind

__all__ = [
    "FIELDS",
    "Field",
    "Level",
    "Query",
    "Scope",
    "compile_query",
    "key_conditions",
    "stream",
    "visible",
]

#: Rows fetched from the cursor at a time while streaming.
BATCH: Final = 100


class Level(str, enum.Enum):
    """The Query/Retrieve levels (PS3.4 C.6), in hierarchical order."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        return list(Level).index(self)


@dataclass(frozen=True, slots=True)
class Scope:
    """Which studies a caller sees: a peer's :class:`~storage.models.PeerScope` and slug.

    ``sent`` shows the studies whose ``source_peer`` is ``peer``; ``routed``
    the studies with a forward job to ``peer`` (routed or forwarded to it,
    whatever became of the job); ``all`` shows every active study.
    """

    kind: PeerScope
    peer: str | None = None


#: An expression built for a scope (only the patient-level counts depend on it).
ColumnFor = Callable[[Scope], SQLColumnExpression[Any]]


@dataclass(frozen=True, slots=True)
class Field:
    """One key the index holds: its level, how it matches, and its SQL.

    ``column`` is what is returned; ``folded`` is matched instead for person
    names; ``within`` wraps a condition on a child table's column in an
    ``EXISTS`` (multi-valued study attributes).
    """

    level: Level
    kind: ValueKind
    column: ColumnFor
    folded: SQLColumnExpression[str] | None = None
    within: Callable[[Callable[[SQLColumnExpression[Any]], ColumnElement[bool]]],
                     ColumnElement[bool]] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    """A query level, its keys (field name -> match) and who asks.

    A key whose match is :class:`~storage.matching.Universal` is only
    returned. With ``combined_datetime`` StudyDate and StudyTime ranges
    match as one date-time (PS3.4 C.2.2.2.5, when the caller negotiated it).
    """

    level: Level
    keys: Mapping[str, Match]
    scope: Scope
    combined_datetime: bool = False


def visible(scope: Scope, study: Any = Study) -> ColumnElement[bool]:
    """The condition on ``study`` (the class or an alias) for what ``scope`` may see.

    Quarantined studies are never visible (ARCHITECTURE.md, privacy model).
    """
    active = study.state == StudyState.ACTIVE
    if scope.kind is PeerScope.ALL:
        return and_(active, true())
    if scope.kind is PeerScope.SENT and scope.peer:
        return and_(active, study.source_peer == scope.peer)
    if scope.kind is PeerScope.ROUTED and scope.peer:
        # results of a consultation returning to a clinic are not the study routed to it
        routed = exists().where(ForwardJob.study_instance_uid == study.study_instance_uid,
                                ForwardJob.destination == scope.peer,
                                ForwardJob.kind != JobKind.RESULT)
        return and_(active, routed)
    return and_(active, false())


def _patient_total(what: Callable[[Any], ColumnElement[Any]]) -> ColumnFor:
    def build(scope: Scope) -> ColumnElement[Any]:
        inner = aliased(Study)
        return func.coalesce(
            select(what(inner)).where(inner.patient_fk == Patient.id, visible(scope, inner))
            .correlate(Patient).scalar_subquery(),
            0,
        )
    return build


def _series_of_study(condition: Callable[[SQLColumnExpression[Any]], ColumnElement[bool]]
                     ) -> ColumnElement[bool]:
    inner = aliased(Series)
    return exists().where(inner.study_fk == Study.id, condition(inner.modality)).correlate(Study)


def _instances_of_study(condition: Callable[[SQLColumnExpression[Any]], ColumnElement[bool]]
                        ) -> ColumnElement[bool]:
    series, instance = aliased(Series), aliased(Instance)
    return (exists().where(series.study_fk == Study.id, instance.series_fk == series.id,
                           condition(instance.sop_class_uid)).correlate(Study))


def _plain(column: SQLColumnExpression[Any]) -> ColumnFor:
    return lambda _scope: column


_P, _ST, _SE, _IM = Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE
_T, _PN, _UI = ValueKind.TEXT, ValueKind.PERSON, ValueKind.UID
_DA, _TM, _IS = ValueKind.DATE, ValueKind.TIME, ValueKind.NUMBER

#: Every key the index holds, by field name (the DICOM keyword in snake_case).
FIELDS: Final[Mapping[str, Field]] = {
    "patient_id": Field(_P, _T, _plain(Patient.patient_id)),
    "patient_name": Field(_P, _PN, _plain(Patient.patient_name), Patient.patient_name_folded),
    "patient_sex": Field(_P, _T, _plain(Patient.patient_sex)),
    "patient_birth_date": Field(_P, _DA, _plain(Patient.patient_birth_date)),
    "number_of_patient_related_studies": Field(
        _P, _IS, _patient_total(lambda study: func.count(study.id))),
    "number_of_patient_related_series": Field(
        _P, _IS, _patient_total(lambda study: func.sum(study.number_of_study_related_series))),
    "number_of_patient_related_instances": Field(
        _P, _IS, _patient_total(lambda study: func.sum(study.number_of_study_related_instances))),
    "study_instance_uid": Field(_ST, _UI, _plain(Study.study_instance_uid)),
    "study_date": Field(_ST, _DA, _plain(Study.study_date)),
    "study_time": Field(_ST, _TM, _plain(Study.study_time)),
    "accession_number": Field(_ST, _T, _plain(Study.accession_number)),
    "study_id": Field(_ST, _T, _plain(Study.study_id)),
    "study_description": Field(_ST, _T, _plain(Study.study_description)),
    "referring_physician_name": Field(_ST, _PN, _plain(Study.referring_physician_name),
                                      Study.referring_physician_name_folded),
    "modalities_in_study": Field(_ST, _T, _plain(Study.modalities_in_study),
                                 within=_series_of_study),
    "sop_classes_in_study": Field(_ST, _UI, _plain(Study.sop_classes_in_study),
                                  within=_instances_of_study),
    "number_of_study_related_series": Field(_ST, _IS,
                                            _plain(Study.number_of_study_related_series)),
    "number_of_study_related_instances": Field(_ST, _IS,
                                               _plain(Study.number_of_study_related_instances)),
    "series_instance_uid": Field(_SE, _UI, _plain(Series.series_instance_uid)),
    "modality": Field(_SE, _T, _plain(Series.modality)),
    "series_number": Field(_SE, _IS, _plain(Series.series_number)),
    "series_description": Field(_SE, _T, _plain(Series.series_description)),
    "body_part_examined": Field(_SE, _T, _plain(Series.body_part_examined)),
    "number_of_series_related_instances": Field(
        _SE, _IS, _plain(Series.number_of_series_related_instances)),
    "sop_instance_uid": Field(_IM, _UI, _plain(Instance.sop_instance_uid)),
    "sop_class_uid": Field(_IM, _UI, _plain(Instance.sop_class_uid)),
    "instance_number": Field(_IM, _IS, _plain(Instance.instance_number)),
    "available_transfer_syntax_uid": Field(_IM, _UI, _plain(Instance.transfer_syntax_uid)),
}


def _combined(date: Match, time: Match) -> ColumnElement[bool] | None:
    """StudyDate and StudyTime as one date-time range (PS3.4 C.2.2.2.5), when both apply."""
    if not isinstance(time, Range) or not isinstance(date, Single | Range):
        return None
    date_low, date_high = ((date.value, date.value) if isinstance(date, Single)
                           else (date.low, date.high))
    low = None if date_low is None else date_low + (time.low or "000000")
    high = None if date_high is None else date_high + (time.high or "235959.999999")
    joined = Study.study_date.concat(time_of(Study.study_time))
    return range_condition(joined, Study.study_date, low, high)


def _on_child(match: Match, kind: ValueKind, dialect: str
              ) -> Callable[[SQLColumnExpression[Any]], ColumnElement[bool]]:
    def condition(inner: SQLColumnExpression[Any]) -> ColumnElement[bool]:
        found = match_condition(inner, match, kind, dialect)
        return true() if found is None else found
    return condition


def key_conditions(level: Level, keys: Mapping[str, Match], dialect: str, *,
                   scope: Scope = Scope(PeerScope.ALL),
                   combined_datetime: bool = False) -> list[ColumnElement[bool]]:
    """The conditions of every key of ``keys`` that is a field at or above ``level``.

    ``scope`` only matters to the patient-level counts, which count the
    studies it may see.

    Raises
    ------
    KeyError
        When a key is not in :data:`FIELDS` or lies below ``level``.
    """
    keys = dict(keys)
    conditions: list[ColumnElement[bool]] = []
    if combined_datetime and "study_date" in keys and "study_time" in keys:
        joined = _combined(keys["study_date"], keys["study_time"])
        if joined is not None:
            conditions.append(joined)
            del keys["study_date"], keys["study_time"]
    for name, match in keys.items():
        spec = FIELDS[name]
        if spec.level.depth > level.depth:
            raise KeyError(f"{name} is not a key at the {level.value} level")
        if isinstance(match, Universal):
            continue
        column = spec.column(scope)
        if spec.within is not None:
            conditions.append(spec.within(_on_child(match, spec.kind, dialect)))
            continue
        condition = match_condition(column, match, spec.kind, dialect, spec.folded)
        if condition is not None:
            conditions.append(condition)
    return conditions


def compile_query(query: Query, dialect: str) -> Select[Any]:
    """One SELECT for ``query``: its keys' columns, labelled by field name.

    Parameters
    ----------
    query : Query
        The level, keys and scope.
    dialect : str
        ``"sqlite"`` or ``"postgresql"`` (wildcards differ, see the notes).

    Returns
    -------
    sqlalchemy.Select
        Without a LIMIT and without an order (see the module notes).

    Raises
    ------
    KeyError
        When a key is unknown or lies below the query level.
    """
    level = query.level
    columns: list[ColumnElement[Any]] = [
        FIELDS[name].column(query.scope).label(name) for name in query.keys]
    if level is Level.PATIENT:
        inner = aliased(Study)
        statement = select(*columns).select_from(Patient).where(
            exists().where(inner.patient_fk == Patient.id, visible(query.scope, inner))
            .correlate(Patient)
        )
    else:
        statement = select(*columns)
        if level is Level.IMAGE:
            statement = statement.select_from(Instance).join(
                Series, Instance.series_fk == Series.id)
        elif level is Level.SERIES:
            statement = statement.select_from(Series)
        if level is Level.STUDY:
            statement = statement.select_from(Study)
        else:
            statement = statement.join(Study, Series.study_fk == Study.id)
        statement = statement.join(Patient, Study.patient_fk == Patient.id).where(
            visible(query.scope))
    conditions = key_conditions(level, query.keys, dialect, scope=query.scope,
                                combined_datetime=query.combined_datetime)
    return statement.where(*conditions) if conditions else statement


def stream(engine: Engine, query: Query, *, limit: int
           ) -> Generator[dict[str, Any], None, None]:
    """Yield the rows of ``query`` as the cursor delivers them, at most ``limit``.

    On SQLite the rows are read in one read-only transaction, :data:`BATCH`
    at a time; on PostgreSQL as the server sends them, in chunks of
    :data:`BATCH`, from one statement (:func:`storage._sql.stream_postgresql`:
    no server-side cursor and its round trips). Closing the generator early
    (a C-CANCEL) ends the transaction or cancels the statement.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The node's engine.
    query : Query
        What to find.
    limit : int
        At most this many rows (a result cap plus one tells the caller that
        more matched).

    Yields
    ------
    dict[str, Any]
        Field name -> stored value, for every key of the query.
    """
    statement = compile_query(query, engine.dialect.name).limit(limit)
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            yield from stream_postgresql(connection, statement, BATCH)
        return
    with read_connection(engine) as connection:
        result = connection.execution_options(yield_per=BATCH).execute(statement)
        try:
            for row in result.mappings():
                yield dict(row)
        finally:
            result.close()
