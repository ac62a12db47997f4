"""DCMTK's findscu against the node started as a user starts it, on a generated index.

Every level of both information models, each kind of PS3.4 C.2.2.2
matching, the refusals (no QueryRetrieveLevel, a missing higher-level key,
no query role) and a peer's scope. The index is tests/query_index.py; each
case states its expected matches as a Python predicate over it, and
findscu's extracted responses (``-X``) must hold exactly those (in any
order: PS3.4 gives C-FIND responses none).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread

from storage.db import make_engine
from storage.models import PeerScope
from storage.schema import upgrade
from tests.conftest import require_tool
from tests.interop.conftest import ServedNode
from tests.query_index import (
    INSTANCES,
    PATIENTS,
    SERIES,
    STUDIES,
    add_peer,
    modalities,
    populate,
)

pytestmark = pytest.mark.interop

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


@dataclass(frozen=True)
class Case:
    """One findscu run: model (-P or -S), keys (-k), the unique key and what must come back."""

    name: str
    model: str
    keys: tuple[str, ...]
    unique: str
    expected: list[str]


def _cases() -> Iterator[Case]:
    study_uids = [s.uid for s in STUDIES]
    yield Case("S/STUDY universal", "-S", ("QueryRetrieveLevel=STUDY", "StudyInstanceUID"),
               "StudyInstanceUID", study_uids)
    yield from (
        Case(f"S/STUDY {key}", "-S", ("QueryRetrieveLevel=STUDY", "StudyInstanceUID", key),
             "StudyInstanceUID", [s.uid for s in STUDIES if keep(s)])
        for key, keep in [
            ("PatientName=doe*", lambda s: s.patient.patient_name.lower().startswith("doe")),
            ("PatientName=doe^john", lambda s: s.patient.patient_name == "DOE^JOHN"),
            ("AccessionNumber=ACC-000?", lambda s: True),
            ("StudyDescription=*100%", lambda s: s.description.endswith("100%")),
            ("StudyDescription=ct_*", lambda s: s.description.startswith("ct_")),
            ("StudyDate=20240131", lambda s: s.date == "20240131"),
            ("StudyDate=20240101-20240131", lambda s: "20240101" <= s.date <= "20240131"),
            ("StudyDate=20240201-", lambda s: s.date >= "20240201"),
            ("StudyDate=-20231231", lambda s: s.date != "" and s.date <= "20231231"),
            ("StudyTime=0930-1200", lambda s: s.time in ("0930", "101500.25", "12", "1200")),
            ("StudyTime=12", lambda s: s.time in ("12", "1200")),
            ("StudyInstanceUID=2.25.1001\\2.25.1007", lambda s: s.uid in ("2.25.1001",
                                                                         "2.25.1007")),
            ("ModalitiesInStudy=MR", lambda s: "MR" in modalities(s)),
            ("ModalitiesInStudy=SR\\CT", lambda s: bool({"SR", "CT"} & modalities(s))),
            ('ReferringPhysicianName=""', lambda s: s.referring == ""),
            ("ReferringPhysicianName=HOUSE^GREG", lambda s: s.referring.lower() == "house^greg"),
        ]
    )
    yield Case("S/SERIES modality", "-S", ("QueryRetrieveLevel=SERIES",
                                           "StudyInstanceUID=2.25.1002", "SeriesInstanceUID",
                                           "Modality=MR"),
               "SeriesInstanceUID", [s.uid for s in SERIES
                                     if s.study.uid == "2.25.1002" and s.modality == "MR"])
    yield Case("S/SERIES empty number", "-S", (
        "QueryRetrieveLevel=SERIES", "StudyInstanceUID=2.25.1002", "SeriesInstanceUID",
        'SeriesNumber=""'), "SeriesInstanceUID", ["2.25.1002.3"])
    yield Case("S/SERIES description wildcard", "-S", (
        "QueryRetrieveLevel=SERIES", "StudyInstanceUID=2.25.1001", "SeriesInstanceUID",
        "SeriesDescription=?x*"), "SeriesInstanceUID", ["2.25.1001.1"])
    yield Case("S/IMAGE UID list", "-S", (
        "QueryRetrieveLevel=IMAGE", "StudyInstanceUID=2.25.1001",
        "SeriesInstanceUID=2.25.1001.1", "SOPInstanceUID=2.25.1001.1.3\\2.25.1001.1.1"),
        "SOPInstanceUID", ["2.25.1001.1.1", "2.25.1001.1.3"])
    yield Case("S/IMAGE number", "-S", (
        "QueryRetrieveLevel=IMAGE", "StudyInstanceUID=2.25.1001",
        "SeriesInstanceUID=2.25.1001.2", "SOPInstanceUID", "InstanceNumber=2"),
        "SOPInstanceUID", ["2.25.1001.2.2"])
    yield Case("P/PATIENT universal", "-P", ("QueryRetrieveLevel=PATIENT", "PatientID"),
               "PatientID", [p.patient_id for p in PATIENTS])
    yield from (
        Case(f"P/PATIENT {key}", "-P", ("QueryRetrieveLevel=PATIENT", "PatientID", key),
             "PatientID", [p.patient_id for p in PATIENTS if keep(p)])
        for key, keep in [
            ("PatientID=PID-1%_*", lambda p: p.patient_id == "PID-1%_X"),
            ("PatientID=PID-00_1*", lambda p: False),
            ("PatientName=smith^anna", lambda p: p.patient_name == "Smith^Anna"),
            ("PatientBirthDate=19700101-19851231",
             lambda p: "19700101" <= p.patient_birth_date <= "19851231"),
            ("PatientSex=F", lambda p: p.patient_sex == "F"),
        ]
    )
    yield Case("P/STUDY", "-P", ("QueryRetrieveLevel=STUDY", "PatientID=PID-0001",
                                 "StudyInstanceUID", "StudyDate=20240131"),
               "StudyInstanceUID", ["2.25.1002"])
    yield Case("P/SERIES", "-P", ("QueryRetrieveLevel=SERIES", "PatientID=PID-0002",
                                  "StudyInstanceUID=2.25.1004", "SeriesInstanceUID",
                                  "Modality=CT"), "SeriesInstanceUID", ["2.25.1004.1"])
    yield Case("P/IMAGE", "-P", ("QueryRetrieveLevel=IMAGE", "PatientID=PID-1%_X",
                                 "StudyInstanceUID=2.25.1008", "SeriesInstanceUID=2.25.1008.1",
                                 "SOPInstanceUID"), "SOPInstanceUID",
               [i.uid for i in INSTANCES if i.series.uid == "2.25.1008.1"])


def _findscu(node: ServedNode, out: Path, model: str, keys: tuple[str, ...],
             ae_title: str = "FINDSCU", verbosity: str = "-v") -> tuple[list[Path], str]:
    out.mkdir(parents=True)
    argv = [require_tool("findscu", "dcmtk"), verbosity, model, "-aet", ae_title, "-aec", "GATEWAY",
            "-X", "-od", str(out)]
    for key in keys:
        argv += ["-k", key]
    run = subprocess.run([*argv, "127.0.0.1", str(node.port)], capture_output=True, text=True,
                         env=DCMTK_ENV, check=False, timeout=60)
    return sorted(out.glob("rsp*.dcm")), run.stdout + run.stderr


@pytest.fixture
def indexed_node(serve: Callable[..., ServedNode], db_url: str) -> ServedNode:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        populate(engine)
        add_peer(engine, "viewer", "FINDSCU", ("query",), PeerScope.ALL)
        add_peer(engine, "clinic-a", "CLINICA", ("source", "query"), PeerScope.SENT)
        add_peer(engine, "modality", "MODALITY", ("source",))
    finally:
        engine.dispose()
    return serve()


def test_findscu_every_level_both_roots_each_matching_kind(indexed_node: ServedNode,
                                                          tmp_path: Path) -> None:
    cases = list(_cases())
    assert len(cases) >= 30
    wrong = {}
    for number, case in enumerate(cases):
        files, output = _findscu(indexed_node, tmp_path / f"case{number}", case.model,
                                 case.keys)
        got = sorted(str(dcmread(path)[case.unique].value) for path in files)
        if got != sorted(case.expected) or "Success" not in output:
            wrong[case.name] = {"got": got, "expected": case.expected, "log": output[-600:]}
    assert not wrong


def test_findscu_refusals_computed_keys_and_scope(indexed_node: ServedNode,
                                                 tmp_path: Path) -> None:
    refusals = [
        (("StudyInstanceUID",), "FINDSCU", "a900"),  # no QueryRetrieveLevel
        (("QueryRetrieveLevel=SERIES", "SeriesInstanceUID"), "FINDSCU", "a900"),
        (("QueryRetrieveLevel=STUDY", "StudyInstanceUID"), "MODALITY", "0124"),
    ]
    for number, (keys, ae_title, status) in enumerate(refusals):
        files, output = _findscu(indexed_node, tmp_path / f"refused{number}", "-S", keys,
                                 ae_title, "-d")
        assert files == []
        assert re.search(rf"DIMSE Status\s*: 0x{status}", output, re.IGNORECASE), output[-1500:]

    files, _ = _findscu(indexed_node, tmp_path / "computed", "-S", (
        "QueryRetrieveLevel=STUDY", "StudyInstanceUID=2.25.1002", "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "PatientName",
        "InstitutionName"))
    [path] = files
    ds = dcmread(path)
    assert list(ds.ModalitiesInStudy) == ["MR", "SR"]
    assert (ds.NumberOfStudyRelatedSeries, ds.NumberOfStudyRelatedInstances) == (3, 4)
    assert str(ds.PatientName) == "Doe^Jane"
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.RetrieveAETitle == "GATEWAY"
    assert ds["InstitutionName"].is_empty

    files, _ = _findscu(indexed_node, tmp_path / "scoped", "-S",
                        ("QueryRetrieveLevel=STUDY", "StudyInstanceUID"), "CLINICA")
    assert sorted(str(dcmread(p).StudyInstanceUID) for p in files) == sorted(
        s.uid for s in STUDIES if s.sender == "clinic-a")
