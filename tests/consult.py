"""Consultation round trips in tests: what an institute makes of a de-identified study.

:func:`make_sr` and :func:`make_kos` build a Comprehensive SR and a Key
Object Selection the way a consulting institute would: against the
de-identified instances it received (their patient module, study and
references), with UIDs of its own for the new objects. :class:`Collector`
is a pynetdicom storage SCP that keeps what it receives (an institute or a
clinic PACS in the tests).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ComprehensiveSRStorage,
    KeyObjectSelectionDocumentStorage,
)
from pynetdicom.transport import ThreadedAssociationServer

__all__ = ["Collector", "all_values", "make_kos", "make_sr", "references", "to_bytes"]

INSTITUTE_ROOT = "1.2.826.0.1.3680043.10.999."


def _code(value: str, scheme: str, meaning: str) -> DicomSequence:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return DicomSequence([item])


def _evidence(instances: Sequence[Dataset]) -> DicomSequence:
    by_series: dict[str, list[Dataset]] = {}
    for ds in instances:
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    study = Dataset()
    study.StudyInstanceUID = instances[0].StudyInstanceUID
    series_items = []
    for series_uid, members in by_series.items():
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        series.ReferencedSOPSequence = DicomSequence([_sop_ref(ds) for ds in members])
        series_items.append(series)
    study.ReferencedSeriesSequence = DicomSequence(series_items)
    return DicomSequence([study])


def _sop_ref(ds: Dataset) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    return ref


def _image_item(ds: Dataset) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "IMAGE"
    item.ReferencedSOPSequence = DicomSequence([_sop_ref(ds)])
    return item


def _document(instances: Sequence[Dataset], sop_class: str, modality: str, label: str,
              number: int) -> Dataset:
    """Patient and study copied from what the institute received; everything else its own."""
    first = instances[0]
    ds = Dataset()
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
                    "StudyID", "ReferringPhysicianName", "PatientIdentityRemoved",
                    "DeidentificationMethod"):
        if keyword in first:
            setattr(ds, keyword, first.data_element(keyword).value)  # type: ignore[union-attr]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid(INSTITUTE_ROOT)
    ds.SeriesInstanceUID = generate_uid(INSTITUTE_ROOT)
    ds.Modality = modality
    ds.SeriesNumber = 900 + number
    ds.InstanceNumber = 1
    ds.Manufacturer = "Institute Reading Station"
    ds.ContentDate, ds.ContentTime = "20261127", "101500"
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(instances)
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.SeriesDescription = label
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def make_sr(instances: Sequence[Dataset], text: str = "No nodule seen.") -> Dataset:
    """A Comprehensive SR: a finding and image references to ``instances``."""
    ds = _document(instances, ComprehensiveSRStorage, "SR", "Second opinion report", 1)
    ds.ConceptNameCodeSequence = _code("18748-4", "LN", "Diagnostic imaging report")
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    finding = Dataset()
    finding.RelationshipType = "CONTAINS"
    finding.ValueType = "TEXT"
    finding.ConceptNameCodeSequence = _code("121071", "DCM", "Finding")
    finding.TextValue = text
    ds.ContentSequence = DicomSequence([finding, *[_image_item(i) for i in instances]])
    return ds


def make_kos(instances: Sequence[Dataset]) -> Dataset:
    """A Key Object Selection ("Of Interest") of ``instances`` (TID 2010)."""
    ds = _document(instances, KeyObjectSelectionDocumentStorage, "KO", "Key images", 2)
    ds.ConceptNameCodeSequence = _code("113000", "DCM", "Of Interest")
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = "DCMR", "2010"
    ds.ContentTemplateSequence = DicomSequence([template])
    ds.ContentSequence = DicomSequence([_image_item(i) for i in instances])
    return ds


def all_values(ds: Dataset) -> Iterator[tuple[str, str]]:
    """Every (keyword, value as text) of a dataset, at any depth."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from all_values(item)
        elif elem.VR not in ("OB", "OW", "OF", "OD", "OL", "UN"):
            values = elem.value if elem.VM > 1 else [elem.value]
            for value in values:
                yield elem.keyword, str(value)


def references(ds: Dataset) -> set[str]:
    """Every ReferencedSOPInstanceUID a dataset holds, at any depth."""
    return {value for keyword, value in all_values(ds) if keyword == "ReferencedSOPInstanceUID"}


def to_bytes(ds: Dataset) -> bytes:
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


class Collector:
    """A storage SCP on a free loopback port that keeps every dataset it receives."""

    def __init__(self, ae_title: str) -> None:
        self.received: list[Dataset] = []
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        self.server: ThreadedAssociationServer = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def _store(self, event: evt.Event) -> int:
        ds = dcmread(BytesIO(to_bytes(_with_meta(event))))
        with self._lock:
            self.received.append(ds)
        return 0x0000

    def datasets(self) -> list[Dataset]:
        with self._lock:
            return list(self.received)

    def stop(self) -> None:
        self.server.shutdown()


def _with_meta(event: evt.Event) -> Dataset:
    ds: Dataset = event.dataset
    ds.file_meta = event.file_meta
    return ds
