"""C-MOVE/C-GET pieces without a network: identifiers, contexts, roles, the pynetdicom read for.

The hand-over of the sub-association (gateway.retrieve) relies on how
pynetdicom's C-MOVE SCP calls ``AE.associate``; the release line it was
read for is pinned here, and the integration tests exercise it.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynetdicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)
from pynetdicom import build_context
from pynetdicom.presentation import negotiate_as_acceptor
from pynetdicom.sop_class import CTImageStorage, MRImageStorage  # type: ignore[attr-defined]

from gateway.query import IdentifierError, Root
from gateway.retrieve import CHECKED_PYNETDICOM, RetrieveAE, parse_retrieve
from gateway.scp import build_ae
from gateway.suboperations import MAX_CONTEXTS, accepted_syntaxes, contexts_for
from storage.matching import Single, UidList
from storage.models import PeerScope
from storage.retrieval import ToSend
from storage.search import Level, Scope
from tests.conftest import node_settings

SCOPE = Scope(PeerScope.ALL)


def test_written_for_this_pynetdicom() -> None:
    assert pynetdicom.__version__.startswith(CHECKED_PYNETDICOM + "."), (
        f"gateway/retrieve.py was checked against pynetdicom {CHECKED_PYNETDICOM}, this is "
        f"{pynetdicom.__version__}: re-read ServiceClass._move_scp (how it calls "
        "AE.associate and what it does with the result) and AE._create_socket, then update "
        "CHECKED_PYNETDICOM")


def test_the_node_ae_returns_a_handed_over_association() -> None:
    opened = object()
    assert RetrieveAE().associate("127.0.0.1", 104, ae_title="X", opened=opened) is opened


def _identifier(**keys: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_only_the_unique_keys_are_kept() -> None:
    query = parse_retrieve(_identifier(QueryRetrieveLevel="SERIES", StudyInstanceUID="1.2.3",
                                       SeriesInstanceUID=["1.2.3.1", "1.2.3.2"],
                                       PatientID="P1", Modality="CT", StudyDate="20240101-"),
                           Root.STUDY, SCOPE)
    assert query.level is Level.SERIES
    assert query.keys == {"study_instance_uid": Single("1.2.3"),
                          "series_instance_uid": UidList(("1.2.3.1", "1.2.3.2"))}
    patient = parse_retrieve(_identifier(QueryRetrieveLevel="STUDY", PatientID="P1",
                                         StudyInstanceUID="1.2.3"), Root.PATIENT, SCOPE)
    assert patient.keys == {"patient_id": Single("P1"), "study_instance_uid": Single("1.2.3")}


@pytest.mark.parametrize(("keys", "root", "comment"), [
    ({"QueryRetrieveLevel": "STUDY"}, Root.STUDY, "StudyInstanceUID: a value is required"),
    ({"QueryRetrieveLevel": "PATIENT", "PatientID": "P*"}, Root.PATIENT,
     "PatientID: a value is required"),
    ({"QueryRetrieveLevel": "PATIENT", "PatientID": "P1"}, Root.STUDY, "not in the Study Root"),
    ({"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": "1.2", "SOPInstanceUID": "1.2.3"},
     Root.STUDY, "SeriesInstanceUID: a single value is required"),
])
def test_identifiers_without_the_unique_key_are_refused(keys: dict[str, str], root: Root,
                                                       comment: str) -> None:
    with pytest.raises(IdentifierError) as raised:
        parse_retrieve(_identifier(**keys), root, SCOPE)
    assert raised.value.status == 0xA900 and comment in raised.value.comment


def _item(sop_class: str, syntax: str, n: int = 0) -> ToSend:
    return ToSend(f"1.2.{n}", sop_class, syntax, "00/00/x.dcm", "1.2")


def _proposed(instances: list[ToSend]) -> list[tuple[str, list[str]]]:
    return [(str(cx.abstract_syntax), [str(s) for s in cx.transfer_syntax])
            for cx in contexts_for(instances)]


def test_contexts_offer_the_stored_syntax_and_a_fallback_only_when_needed() -> None:
    plain = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    assert _proposed([_item(CTImageStorage, ImplicitVRLittleEndian)]) == [(CTImageStorage, plain)]
    assert _proposed([_item(CTImageStorage, RLELossless), _item(MRImageStorage, JPEGBaseline8Bit)]
                     ) == [(CTImageStorage, [RLELossless]), (MRImageStorage, [JPEGBaseline8Bit]),
                           (CTImageStorage, plain), (MRImageStorage, plain)]
    # an uncompressed file of the same class already makes the fallback context
    assert _proposed([_item(CTImageStorage, RLELossless), _item(CTImageStorage,
                                                               ExplicitVRLittleEndian)]
                     ) == [(CTImageStorage, plain), (CTImageStorage, [RLELossless])]


def test_contexts_stay_within_the_limit_fallbacks_going_first() -> None:
    instances = [_item(f"1.2.840.10008.5.1.4.1.1.{n}", RLELossless, n) for n in range(100)]
    proposed = _proposed(instances)
    assert len(proposed) == MAX_CONTEXTS
    assert all(syntaxes == [RLELossless] for _, syntaxes in proposed[:100])


def _negotiated(roles: dict[Any, Any] | None,
                tmp_path: Path) -> Any:
    settings = node_settings(tmp_path, "sqlite:///unused")
    ae = build_ae(SimpleNamespace(settings=settings))  # type: ignore[arg-type]
    requested = build_context(CTImageStorage, [ExplicitVRLittleEndian])
    requested.context_id = 1
    accepted, _ = negotiate_as_acceptor([requested], ae.supported_contexts, roles)
    return accepted[0]


def test_storage_contexts_take_the_role_a_caller_proposes(tmp_path: Path) -> None:
    # a C-GET caller proposes to be the Storage SCP: the node sends on its association
    get = _negotiated({CTImageStorage: (False, True)}, tmp_path)
    assert get.result == 0x00 and get.as_scu and not get.as_scp
    assert accepted_syntaxes([get]) == {CTImageStorage: {ExplicitVRLittleEndian}}
    # a sender that proposes no roles, or the SCU role only, still stores
    for roles in (None, {CTImageStorage: (True, False)}):
        store = _negotiated(roles, tmp_path)
        assert store.result == 0x00 and store.as_scp and not store.as_scu
        assert accepted_syntaxes([store]) == {}


def test_a_frame_no_decoder_takes_fails_its_sub_operation_only(tmp_path: Path) -> None:
    """T17 downstream, C-GET and C-MOVE: an RLE frame whose header is cut short, to a peer
    that accepts only uncompressed CT, becomes a dataset pynetdicom counts as a failed
    sub-operation (with the instance's UID), and nothing raises."""
    from pydicom import dcmread
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    from gateway.suboperations import load
    from storage.filestore import FileStore
    from tests.corpus import make_clinic_study

    study = make_clinic_study(tmp_path / "study", series=1, per_series=1, jpeg=False)
    ds = dcmread(next(iter(study.files.values())))
    ds.compress(RLELossless)
    ds.PixelData = encapsulate([b"\x01\x00\x00\x00"])
    store = FileStore(tmp_path / "store")
    stored = store.write(lambda fh: ds.save_as(fh, enforce_file_format=True))
    item = ToSend(str(ds.SOPInstanceUID), CTImageStorage, RLELossless, stored.path,
                  str(ds.StudyInstanceUID))
    sent = load(store, item, {CTImageStorage: {str(ExplicitVRLittleEndian)}})
    assert [elem.keyword for elem in sent] == ["SOPInstanceUID"]  # pynetdicom fails it
    assert sent.SOPInstanceUID == ds.SOPInstanceUID
