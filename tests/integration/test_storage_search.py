"""C-FIND queries compiled to SQL, run on SQLite and PostgreSQL against a generated index.

Each case states its expected matches with a plain Python predicate over
tests/query_index.py, so the SQL translation is checked against an
independent statement of PS3.4 C.2.2.2 on both databases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, update

from storage.db import session_scope
from storage.matching import ValueKind, parse
from storage.models import PeerScope, Study, StudyState
from storage.search import BATCH, FIELDS, Level, Query, Scope, stream
from tests.query_index import (
    INSTANCES,
    MR,
    PATIENTS,
    SERIES,
    SR,
    STUDIES,
    StudyRow,
    modalities,
    populate,
    sop_classes,
)

ALL = Scope(PeerScope.ALL)


@pytest.fixture
def indexed(engine: Engine) -> Engine:
    populate(engine)
    return engine


def _query(level: Level, scope: Scope = ALL, combined: bool = False,
           **keys: str | list[str]) -> Query:
    parsed = {name: parse([value] if isinstance(value, str) else value, FIELDS[name].kind)
              for name, value in keys.items()}
    return Query(level=level, keys=parsed, scope=scope, combined_datetime=combined)


def _uids(engine: Engine, query: Query, unique: str = "study_instance_uid") -> list[str]:
    keys = dict(query.keys)
    keys.setdefault(unique, parse([], FIELDS[unique].kind))
    full = Query(level=query.level, keys=keys, scope=query.scope,
                 combined_datetime=query.combined_datetime)
    return sorted(row[unique] for row in stream(engine, full, limit=1000))


def _studies(predicate: Callable[[StudyRow], bool]) -> list[str]:
    return sorted(study.uid for study in STUDIES if predicate(study))


STUDY_CASES: list[tuple[str, dict[str, Any], Callable[[StudyRow], bool]]] = [
    ("universal", {}, lambda s: True),
    ("single text", {"accession_number": "ACC-0003"}, lambda s: s.accession == "ACC-0003"),
    ("single text is case-sensitive", {"study_description": "ct chest"}, lambda s: False),
    ("PN single ignores case", {"patient_name": "doe^jane"},
     lambda s: s.patient.patient_name == "Doe^Jane"),
    ("PN wildcard ignores case", {"patient_name": "doe*"},
     lambda s: s.patient.patient_name.lower().startswith("doe")),
    ("PN question mark", {"referring_physician_name": "h?use^greg"},
     lambda s: s.referring.lower() == "house^greg"),
    ("wildcard is case-sensitive", {"study_description": "CT*"},
     lambda s: s.description.startswith("CT")),
    ("wildcard in the middle", {"study_description": "*chest"},
     lambda s: s.description.endswith("chest")),
    ("percent is literal", {"study_description": "*100%"},
     lambda s: s.description.endswith("100%")),
    ("underscore is literal", {"study_description": "ct_*"},
     lambda s: s.description.startswith("ct_")),
    ("underscore does not match any one character", {"study_description": "CT_ches*"},
     lambda s: False),
    ("percent and underscore in a PN pattern are literal", {"patient_name": "?_brien^pat%"},
     lambda s: s.patient is PATIENTS[3]),
    ("percent in a PN pattern matches only itself", {"patient_name": "o%*"}, lambda s: False),
    ("bracket is literal", {"study_description": "CT [contrast]*"},
     lambda s: s.description == "CT [contrast]"),
    ("date single", {"study_date": "20240131"}, lambda s: s.date == "20240131"),
    ("date range", {"study_date": "20240101-20240131"},
     lambda s: "20240101" <= s.date <= "20240131" and s.date != ""),
    ("date open end", {"study_date": "20240201-"}, lambda s: s.date >= "20240201"),
    ("date open start", {"study_date": "-20231231"},
     lambda s: s.date != "" and s.date <= "20231231"),
    ("time range across precisions", {"study_time": "0930-1200"},
     lambda s: s.time in ("0930", "101500.25", "12", "1200")),
    ("time single is its precision", {"study_time": "12"},
     lambda s: s.time in ("12", "1200")),
    ("time open start", {"study_time": "-0930"},
     lambda s: s.time in ("0930", "080000.5", "000000")),
    ("time with fraction", {"study_time": "101500.3-"},
     lambda s: s.time in ("235959", "12", "1200")),
    ("empty value", {"referring_physician_name": '""'}, lambda s: s.referring == ""),
    ("UID single", {"study_instance_uid": "2.25.1004"}, lambda s: s.uid == "2.25.1004"),
    ("UID list", {"study_instance_uid": ["2.25.1001", "2.25.1007", "2.25.9"]},
     lambda s: s.uid in ("2.25.1001", "2.25.1007")),
    ("modalities in study", {"modalities_in_study": "MR"}, lambda s: "MR" in modalities(s)),
    ("modalities in study, any of two", {"modalities_in_study": ["SR", "MR"]},
     lambda s: bool({"SR", "MR"} & modalities(s))),
    ("SOP classes in study", {"sop_classes_in_study": SR}, lambda s: SR in sop_classes(s)),
    ("number of related series", {"number_of_study_related_series": "2"},
     lambda s: len([x for x in SERIES if x.study == s]) == 2),
    ("patient keys at the study level", {"patient_id": "PID-0002"},
     lambda s: s.patient.patient_id == "PID-0002"),
    ("several keys together", {"patient_sex": "F", "modalities_in_study": "CT"},
     lambda s: s.patient.patient_sex == "F" and "CT" in modalities(s)),
]


def test_study_level_matching(indexed: Engine) -> None:
    # one index for all cases; every case is checked and the wrong ones are named together
    wrong = {}
    for name, keys, expected in STUDY_CASES:
        got, want = _uids(indexed, _query(Level.STUDY, **keys)), _studies(expected)
        if got != want:
            wrong[name] = {"got": got, "expected": want}
    assert not wrong
    assert len(STUDY_CASES) >= 30


def test_combined_date_time_range_matches_as_one_instant(indexed: Engine) -> None:
    keys = {"study_date": "20240105-20240131", "study_time": "0900-2300"}
    separate = _uids(indexed, _query(Level.STUDY, **keys))
    combined = _uids(indexed, _query(Level.STUDY, combined=True, **keys))
    # separately: a date in range and a time of day in range (an empty time never matches)
    assert separate == ["2.25.1001"]
    # combined: from 2024-01-05 09:00 to 2024-01-31 23:00:59.999999; an empty time is midnight
    assert combined == ["2.25.1001", "2.25.1005", "2.25.1008"]


def test_combined_single_date_with_time_range(indexed: Engine) -> None:
    got = _uids(indexed, _query(Level.STUDY, combined=True, study_date="20240131",
                                study_time="-0100"))
    assert got == ["2.25.1008"]


def test_patient_level_counts_follow_the_scope(indexed: Engine) -> None:
    keys = {name: parse([], FIELDS[name].kind) for name in (
        "patient_id", "number_of_patient_related_studies", "number_of_patient_related_series",
        "number_of_patient_related_instances")}
    rows = sorted(stream(indexed, Query(level=Level.PATIENT, keys=keys, scope=ALL), limit=100),
                  key=lambda row: str(row["patient_id"]))
    assert [row["patient_id"] for row in rows] == sorted(p.patient_id for p in PATIENTS)
    p1 = rows[0]
    assert (p1["number_of_patient_related_studies"], p1["number_of_patient_related_series"],
            p1["number_of_patient_related_instances"]) == (2, 5, 9)
    scoped = sorted(stream(indexed, Query(level=Level.PATIENT, keys=keys,
                                          scope=Scope(PeerScope.SENT, "clinic-b")), limit=100),
                    key=lambda row: str(row["patient_id"]))
    assert [row["patient_id"] for row in scoped] == ["PID-0002", "PID-0003", "PID-1%_X"]
    assert [row["number_of_patient_related_studies"] for row in scoped] == [1, 1, 1]


def test_patient_id_wildcard_escapes_like_characters(indexed: Engine) -> None:
    assert _uids(indexed, _query(Level.PATIENT, patient_id="PID-1%_*"), "patient_id") == [
        "PID-1%_X"]
    assert _uids(indexed, _query(Level.PATIENT, patient_id="PID-1??X"), "patient_id") == [
        "PID-1%_X"]
    assert _uids(indexed, _query(Level.PATIENT, patient_id="PID-00_1*"), "patient_id") == []


def test_series_and_image_levels(indexed: Engine) -> None:
    got = _uids(indexed, _query(Level.SERIES, study_instance_uid="2.25.1002", modality="MR"),
                "series_instance_uid")
    assert got == sorted(s.uid for s in SERIES
                         if s.study.uid == "2.25.1002" and s.modality == "MR")
    got = _uids(indexed, _query(Level.SERIES, study_instance_uid="2.25.1002",
                                series_number='""'), "series_instance_uid")
    assert got == [s.uid for s in SERIES if s.study.uid == "2.25.1002" and s.number is None]
    got = _uids(indexed, _query(Level.IMAGE, study_instance_uid="2.25.1002",
                                series_instance_uid="2.25.1002.1", sop_class_uid=MR),
                "sop_instance_uid")
    assert got == sorted(i.uid for i in INSTANCES if i.series.uid == "2.25.1002.1")
    got = _uids(indexed, _query(Level.IMAGE, study_instance_uid="2.25.1001",
                                series_instance_uid="2.25.1001.1", instance_number="2"),
                "sop_instance_uid")
    assert got == ["2.25.1001.1.2"]


def test_scopes(indexed: Engine) -> None:
    sent_a = _uids(indexed, _query(Level.STUDY, Scope(PeerScope.SENT, "clinic-a")))
    assert sent_a == _studies(lambda s: s.sender == "clinic-a")
    assert _uids(indexed, _query(Level.STUDY, Scope(PeerScope.SENT, "nobody"))) == []
    assert _uids(indexed, _query(Level.STUDY, Scope(PeerScope.ROUTED, "clinic-a"))) == []
    assert _uids(indexed, _query(Level.IMAGE, Scope(PeerScope.ROUTED, "clinic-a"),
                                 study_instance_uid="2.25.1001",
                                 series_instance_uid="2.25.1001.1"), "sop_instance_uid") == []


def test_quarantined_studies_are_never_found(indexed: Engine) -> None:
    with session_scope(indexed) as session:
        session.execute(update(Study).where(Study.study_instance_uid == "2.25.1001")
                        .values(state=StudyState.QUARANTINED))
    assert "2.25.1001" not in _uids(indexed, _query(Level.STUDY))
    assert _uids(indexed, _query(Level.SERIES, study_instance_uid="2.25.1001"),
                 "series_instance_uid") == []


def test_stream_reads_rows_as_the_database_delivers_them(
        indexed: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    if indexed.dialect.name == "postgresql":
        import psycopg

        streamed = psycopg.Cursor.stream

        def record_stream(self: Any, query: Any, params: Any = None, **options: Any) -> Any:
            seen.append({"stream": True, "cursor": type(self).__name__,
                         "size": options.get("size")})
            return streamed(self, query, params, **options)

        # one statement streamed by psycopg: no server-side cursor, no FETCH round trips
        monkeypatch.setattr(psycopg.Cursor, "stream", record_stream)

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append({"stream": context.execution_options.get("stream_results"),
                         "cursor": type(cursor).__name__})

    event.listen(indexed, "before_cursor_execute", record)
    try:
        rows = stream(indexed, _query(Level.STUDY, study_instance_uid=""), limit=100)
        first = next(rows)
        assert first["study_instance_uid"] in {study.uid for study in STUDIES}
        rows.close()
    finally:
        event.remove(indexed, "before_cursor_execute", record)
    assert seen and seen[-1]["stream"] is True
    if indexed.dialect.name == "postgresql":
        assert seen[-1]["cursor"] == "Cursor" and seen[-1]["size"] in (1, BATCH)
    with session_scope(indexed, readonly=True) as session:  # the connection is usable again
        assert session.execute(select(Study.id).limit(1)).scalar_one() > 0


def test_limit_bounds_the_rows(indexed: Engine) -> None:
    rows: Iterator[dict[str, Any]] = stream(indexed, _query(Level.STUDY, study_instance_uid=""),
                                            limit=3)
    assert len(list(rows)) == 3


def test_every_field_can_be_returned(indexed: Engine) -> None:
    keys = {name: parse([], spec.kind) for name, spec in FIELDS.items()}
    [row] = stream(indexed, Query(level=Level.IMAGE, keys={
        **keys, "sop_instance_uid": parse(["2.25.1002.3.1"], ValueKind.UID)}, scope=ALL),
        limit=10)
    assert row["modalities_in_study"] == "MR\\SR"
    assert row["number_of_study_related_series"] == 3
    assert row["number_of_series_related_instances"] == 1
    assert row["series_number"] is None
    assert row["patient_name"] == "Doe^Jane"
    assert row["available_transfer_syntax_uid"] == "1.2.840.10008.1.2.1"


def test_a_routed_scope_sees_the_studies_routed_to_that_peer(indexed: Engine) -> None:
    import storage.jobs as jobs
    from datetime import UTC, datetime

    with session_scope(indexed) as session:
        routed = jobs.enqueue(session, "2.25.1001", "institute", datetime.now(UTC))
    assert routed is not None
    assert _uids(indexed, _query(Level.STUDY, Scope(PeerScope.ROUTED, "institute"))) == [
        "2.25.1001"]
    assert _uids(indexed, _query(Level.STUDY, Scope(PeerScope.ROUTED, "other"))) == []
    images = _uids(indexed, _query(Level.IMAGE, Scope(PeerScope.ROUTED, "institute"),
                                   study_instance_uid="2.25.1001",
                                   series_instance_uid="2.25.1001.1"), "sop_instance_uid")
    assert images, "the routed study's images are hidden from its destination"


def test_results_returning_to_a_clinic_do_not_route_the_study_to_it(indexed: Engine) -> None:
    import storage.jobs as jobs
    from datetime import UTC, datetime

    with session_scope(indexed) as session:
        back = jobs.enqueue_results(session, "2.25.1001", "clinic", ["1.2.826.0.1.3680043.8.498.7"],
                                    datetime.now(UTC))
    assert back is not None and back.kind.value == "result"
    assert _uids(indexed, _query(Level.STUDY, Scope(PeerScope.ROUTED, "clinic"))) == []
