"""Pre-encoded C-FIND responses: the same bytes pydicom and pynetdicom would send."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dsutils import decode, encode

from gateway.query import MULTI_VALUED, Root, parse_identifier, response_elements, to_identifier
from gateway.responses import IdentifierEncoder, PendingSender
from storage.models import PeerScope
from storage.search import Scope

SCOPE = Scope(PeerScope.ALL)
#: (implicit VR, little endian): the syntaxes the FIND contexts accept
SYNTAXES = [(True, True), (False, True), (False, False)]


def _request(level: str = "STUDY", **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        tag = Tag(keyword)
        ds.add(DataElement(tag, dictionary_VR(tag), value, validation_mode=config.IGNORE))
    return ds


ROWS = [
    {"patient_name": "ANON^ABCDEF", "patient_id": "ANONABCDEF", "patient_sex": "F",
     "study_instance_uid": "2.25.123", "study_date": "20240131", "study_time": "101500.25",
     "accession_number": "ACC1", "study_description": "CT chest", "modalities_in_study": "CT\\MR",
     "number_of_study_related_instances": 12, "referring_physician_name": "",
     "patient_birth_date": None},
    {"patient_name": "Dœ^Zoë", "patient_id": "P", "patient_sex": "", "study_instance_uid": "1.2",
     "study_date": "", "study_time": "1", "accession_number": "", "study_description": "odd",
     "modalities_in_study": "", "number_of_study_related_instances": 7,
     "referring_physician_name": "House^Greg", "patient_birth_date": "19700101"},
]


@pytest.mark.parametrize(("implicit", "little"), SYNTAXES)
@pytest.mark.parametrize("row", ROWS)
def test_identifier_bytes_match_pydicom(implicit: bool, little: bool, row: dict[str, Any]) -> None:
    request = _request(PatientName="", PatientID="", PatientSex="", PatientBirthDate="",
                       StudyInstanceUID="", StudyDate="", StudyTime="", AccessionNumber="",
                       StudyDescription="", ModalitiesInStudy="", ReferringPhysicianName="",
                       NumberOfStudyRelatedInstances="", InstanceAvailability="",
                       InstitutionName="unknown to the index",
                       ProcedureCodeSequence=Sequence([]))
    find = parse_identifier(request, Root.STUDY, SCOPE)
    encoder = IdentifierEncoder(response_elements(find, "GATEWAY"), implicit_vr=implicit,
                                little_endian=little, multi_valued=MULTI_VALUED)
    expected = encode(to_identifier(row, find, "GATEWAY"), implicit, little)
    assert encoder.encode(row) == expected


def test_an_overlong_value_falls_back() -> None:
    find = parse_identifier(_request(StudyDescription=""), Root.STUDY, SCOPE)
    encoder = IdentifierEncoder(response_elements(find, "GATEWAY"), implicit_vr=False,
                                little_endian=True)
    assert encoder.encode({"study_description": "x" * 70000}) is None
    implicit = IdentifierEncoder(response_elements(find, "GATEWAY"), implicit_vr=True,
                                 little_endian=True)
    assert implicit.encode({"study_description": "x" * 70000}) is not None


def test_an_ambiguous_vr_is_refused() -> None:
    with pytest.raises(ValueError, match="US or SS"):
        IdentifierEncoder([(0x00280106, "US or SS", None)], implicit_vr=False,
                          little_endian=True)


class _Dul:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send_pdu(self, primitive: Any) -> None:
        self.sent.append(primitive)


class _Dimse:
    def __init__(self, maximum_pdu_size: int) -> None:
        self.maximum_pdu_size = maximum_pdu_size


class _Assoc:
    def __init__(self, maximum_pdu_size: int) -> None:
        self.dul = _Dul()
        self.dimse = _Dimse(maximum_pdu_size)


@pytest.mark.parametrize("maximum_pdu_size", [0, 16384, 64])
def test_pending_response_decodes_as_pynetdicom_reads_it(maximum_pdu_size: int) -> None:
    assoc = _Assoc(maximum_pdu_size)
    sender = PendingSender(assoc, 3, 7, "1.2.840.10008.5.1.4.1.2.2.1", 0xFF01)
    identifier = Dataset()
    identifier.PatientID = "ANON1234"
    identifier.StudyInstanceUID = "2.25.1"
    sender.send(encode(identifier, False, True) or b"")
    pdus = assoc.dul.sent
    if maximum_pdu_size == 64:  # command and identifier in fragments, one PDU each
        assert len(pdus) > 2
    else:  # command and identifier as two PDVs of one PDU
        assert len(pdus) == 1 and len(pdus[0].presentation_data_value_list) == 2
    message = C_FIND_RSP()
    done = [message.decode_msg(pdu) for pdu in pdus]
    assert done[-1] and not any(done[:-1])
    for pdu in pdus:  # a PDV item: length (4 bytes), context ID (1), header and fragment
        assert {context_id for context_id, _ in pdu.presentation_data_value_list} == {3}
        length = sum(4 + 1 + len(pdv) for _, pdv in pdu.presentation_data_value_list)
        assert maximum_pdu_size == 0 or length <= maximum_pdu_size
    primitive = message.message_to_primitive()
    assert primitive.Status == 0xFF01
    assert primitive.MessageIDBeingRespondedTo == 7
    assert primitive.AffectedSOPClassUID == "1.2.840.10008.5.1.4.1.2.2.1"
    received = decode(primitive.Identifier or BytesIO(), False, True)
    assert received.PatientID == "ANON1234" and received.StudyInstanceUID == "2.25.1"
