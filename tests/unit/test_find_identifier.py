"""C-FIND identifiers to index queries and back (PS3.4 C.4.1, C.6): levels, hierarchy, keys."""

from __future__ import annotations

import pytest
from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from gateway.query import (
    IDENTIFIER_DOES_NOT_MATCH,
    IdentifierError,
    Root,
    datetime_matching,
    extended_negotiation,
    parse_identifier,
    to_identifier,
)
from storage.matching import Range, Single, UidList, Universal, Wildcard
from storage.models import PeerScope
from storage.search import Level, Scope

SCOPE = Scope(PeerScope.SENT, "clinic-a")


def _ds(**keys: object) -> Dataset:
    """An identifier as a peer may send it: values are not checked against their VR."""
    ds = Dataset()
    for keyword, value in keys.items():
        tag = Tag(keyword)
        ds.add(DataElement(tag, dictionary_VR(tag), value, validation_mode=config.IGNORE))
    return ds


def test_study_root_study_level() -> None:
    find = parse_identifier(_ds(QueryRetrieveLevel="STUDY", PatientName="doe*",
                                StudyDate="20240101-", ModalitiesInStudy=["CT", "MR"],
                                StudyInstanceUID=["1.2.3", "1.2.4"]), Root.STUDY, SCOPE)
    query = find.query
    assert query.level is Level.STUDY and query.scope == SCOPE
    assert query.keys["patient_name"] == Wildcard("doe*")
    assert query.keys["study_date"] == Range("20240101", None)
    assert query.keys["study_instance_uid"] == UidList(("1.2.3", "1.2.4"))
    assert not find.unsupported
    assert [name for _, _, name in find.returned] == [
        "study_date", "modalities_in_study", "patient_name", "study_instance_uid"]


@pytest.mark.parametrize(("keys", "root", "message"), [
    ({}, Root.STUDY, "QueryRetrieveLevel is missing"),
    ({"QueryRetrieveLevel": ""}, Root.STUDY, "QueryRetrieveLevel is missing"),
    ({"QueryRetrieveLevel": "FRAME"}, Root.STUDY, "expected PATIENT, STUDY, SERIES or IMAGE"),
    ({"QueryRetrieveLevel": "PATIENT"}, Root.STUDY, "not in the Study Root model"),
    ({"QueryRetrieveLevel": "SERIES"}, Root.STUDY, "StudyInstanceUID: a single value"),
    ({"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": ["1.2", "1.3"]}, Root.STUDY,
     "StudyInstanceUID: a single value"),
    ({"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": "1.2"}, Root.STUDY,
     "SeriesInstanceUID: a single value"),
    ({"QueryRetrieveLevel": "STUDY"}, Root.PATIENT, "PatientID: a single value"),
    ({"QueryRetrieveLevel": "STUDY", "PatientID": "ANON*"}, Root.PATIENT,
     "PatientID: a single value"),
    ({"QueryRetrieveLevel": "STUDY", "StudyDate": "2024"}, Root.STUDY,
     "StudyDate: expected a date"),
    ({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.*"}, Root.STUDY,
     "StudyInstanceUID: wildcards are not allowed"),
])
def test_bad_identifiers_get_a900(keys: dict[str, object], root: Root, message: str) -> None:
    with pytest.raises(IdentifierError, match=message) as raised:
        parse_identifier(_ds(**keys), root, SCOPE)
    assert raised.value.status == IDENTIFIER_DOES_NOT_MATCH == 0xA900


def test_patient_root_image_level_needs_every_higher_unique_key() -> None:
    find = parse_identifier(_ds(QueryRetrieveLevel="IMAGE", PatientID="ANON1",
                                StudyInstanceUID="1.2", SeriesInstanceUID="1.2.1",
                                InstanceNumber="3"), Root.PATIENT, SCOPE)
    assert find.query.keys["patient_id"] == Single("ANON1")
    assert find.query.keys["instance_number"] == Single("3")
    # the level's unique key is added to what is returned
    assert find.query.keys["sop_instance_uid"] == Universal()
    assert any(name == "sop_instance_uid" for _, _, name in find.returned)


def test_unknown_and_lower_level_keys_come_back_empty_and_warn_when_valued() -> None:
    find = parse_identifier(_ds(QueryRetrieveLevel="STUDY", StudyInstanceUID="",
                                Modality="", InstitutionName=""), Root.STUDY, SCOPE)
    assert not find.unsupported
    assert {name for _, _, name in find.returned} == {"study_instance_uid", ""}
    assert "modality" not in find.query.keys
    valued = parse_identifier(_ds(QueryRetrieveLevel="STUDY", InstitutionName="X*"),
                              Root.STUDY, SCOPE)
    assert valued.unsupported
    item = Dataset()
    item.CodeValue = "T-D3000"
    coded = parse_identifier(_ds(QueryRetrieveLevel="STUDY",
                                 ProcedureCodeSequence=Sequence([item])), Root.STUDY, SCOPE)
    assert coded.unsupported
    empty = parse_identifier(_ds(QueryRetrieveLevel="STUDY",
                                 ProcedureCodeSequence=Sequence([])), Root.STUDY, SCOPE)
    assert not empty.unsupported


def test_response_identifier() -> None:
    find = parse_identifier(_ds(QueryRetrieveLevel="STUDY", StudyInstanceUID="",
                                ModalitiesInStudy="", NumberOfStudyRelatedInstances="",
                                PatientName="", InstitutionName="", InstanceAvailability="",
                                ProcedureCodeSequence=Sequence([]), SpecificCharacterSet="",
                                RetrieveAETitle=""), Root.STUDY, SCOPE)
    row = {"study_instance_uid": "2.25.7", "modalities_in_study": "CT\\MR",
           "number_of_study_related_instances": 12, "patient_name": "Zoë^Anon"}
    ds = to_identifier(row, find, "GATEWAY")
    assert ds.QueryRetrieveLevel == "STUDY"
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.RetrieveAETitle == "GATEWAY"
    assert ds.StudyInstanceUID == "2.25.7"
    assert list(ds.ModalitiesInStudy) == ["CT", "MR"]
    assert ds.NumberOfStudyRelatedInstances == 12
    assert str(ds.PatientName) == "Zoë^Anon"
    assert ds.InstanceAvailability == "ONLINE"
    assert ds["InstitutionName"].value in ("", None)
    assert list(ds.ProcedureCodeSequence) == []


def test_extended_negotiation_accepts_only_date_time_matching() -> None:
    assert extended_negotiation(b"\x01\x01\x01\x01") == b"\x00\x01\x00\x00"
    assert extended_negotiation(b"\x01") == b"\x00"
    assert datetime_matching(b"\x00\x01")
    assert not datetime_matching(b"\x01\x00")
    assert not datetime_matching(None)
