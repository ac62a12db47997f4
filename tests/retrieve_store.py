"""Stored instances for C-MOVE and C-GET tests, and a Storage SCP that records what arrives.

:func:`store_items` writes real, small image files into a node's file
store (as the ingest worker would: ``dcmwrite`` with a file meta header,
through :class:`storage.filestore.FileStore`) and indexes them, so that a
retrieve reads them from disk. The patient values are fake (the same
images also go through ingest in the Orthanc test, which replaces them).
Three studies of two patients from two senders, CT and MR, one series
stored RLE compressed; :data:`BULK` adds a study of many instances for
cancel tests. Tests state what must arrive from :data:`ITEMS`,
independently of the SQL under test.

:class:`Destination` is a pynetdicom Storage SCP on a free loopback port;
it can hold every C-STORE after the first until a test releases it, or
abort its association at a given C-STORE.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, MRImageStorage  # type: ignore[attr-defined]
from sqlalchemy import Engine

from storage import index
from storage.crypto import MapCipher
from storage.db import session_scope
from storage.filestore import FileStore
from storage.records import InstanceRecord

_CIPHER = MapCipher(b"r" * 32)
_AT = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Item:
    """One stored instance and what it belongs to."""

    study: str
    series: str
    sop: str
    sop_class: str
    modality: str
    number: int
    patient: str
    sender: str
    syntax: str


def _plan(study: str, patient: str, sender: str,
          series: list[tuple[str, int, str]]) -> list[Item]:
    items = []
    for position, (modality, count, syntax) in enumerate(series, start=1):
        for number in range(1, count + 1):
            items.append(Item(study, f"{study}.{position}", f"{study}.{position}.{number}",
                              CTImageStorage if modality == "CT" else MRImageStorage,
                              modality, number, patient, sender, syntax))
    return items


#: fake names, so that a test sending these through ingest sees them replaced
NAMES = {"PSEUDO-A": "Doe^Jane", "PSEUDO-B": "Roe^Richard"}

ITEMS = (
    *_plan("2.25.2001", "PSEUDO-A", "clinic-a",
           [("CT", 3, ExplicitVRLittleEndian), ("MR", 2, ExplicitVRLittleEndian)]),
    *_plan("2.25.2002", "PSEUDO-A", "clinic-a", [("CT", 1, RLELossless)]),
    *_plan("2.25.2003", "PSEUDO-B", "clinic-b", [("CT", 2, ImplicitVRLittleEndian)]),
)
BULK = tuple(_plan("2.25.2004", "PSEUDO-B", "clinic-b", [("CT", 12, ExplicitVRLittleEndian)]))


def of_study(study: str, items: Iterable[Item] = ITEMS) -> list[str]:
    return sorted(item.sop for item in items if item.study == study)


def of_series(series: str, items: Iterable[Item] = ITEMS) -> list[str]:
    return sorted(item.sop for item in items if item.series == series)


def pixels(number: int) -> bytes:
    """The 8 x 8 pixel values of instance ``number``: 12-bit values, little endian words."""
    return b"".join(((number * 100 + n) % 4096).to_bytes(2, "little") for n in range(64))


def image(item: Item) -> Dataset:
    """A small, valid CT or MR image with pseudonymous values."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = item.sop_class, item.sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = item.study, item.series
    ds.PatientName, ds.PatientID = NAMES[item.patient], item.patient
    ds.PatientBirthDate, ds.PatientSex = "", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyDescription = "20240105", "093000", "CHEST"
    ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "", "S1", ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = item.modality, 1, item.number
    ds.FrameOfReferenceUID = f"{item.study}.99"
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, item.number], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [1, 1], 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels(item.number)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(item.sop_class)
    meta.MediaStorageSOPInstanceUID = UID(item.sop)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    if item.syntax == RLELossless:
        ds.compress(RLELossless, generate_instance_uid=False)
    elif item.syntax == ImplicitVRLittleEndian:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def store_items(engine: Engine, store: FileStore, items: Iterable[Item] = ITEMS) -> dict[str, str]:
    """Write and index ``items``; return SOP Instance UID -> file path in the store."""
    paths: dict[str, str] = {}
    with session_scope(engine) as session:
        for item in items:
            ds = image(item)

            def fill(handle: BinaryIO, ds: Dataset = ds) -> None:
                dcmwrite(handle, ds, enforce_file_format=True)

            stored = store.write(fill)
            paths[item.sop] = stored.path
            index.add_instance(session, InstanceRecord(
                patient_id=item.patient, patient_name=NAMES[item.patient], patient_sex="O",
                patient_birth_date="", study_instance_uid=item.study, study_date="20240105",
                study_time="093000", accession_number="", study_id="S1",
                study_description="CHEST", referring_physician_name="",
                series_instance_uid=item.series, modality=item.modality, series_number=1,
                series_description="", body_part_examined="", sop_instance_uid=item.sop,
                sop_class_uid=item.sop_class, instance_number=item.number,
                transfer_syntax_uid=item.syntax, file_path=stored.path, file_size=stored.size,
                sha256=stored.sha256, received_sha256=hashlib.sha256(item.sop.encode()).hexdigest(),
                received_at=_AT, calling_ae_title="MODALITY", source_peer=item.sender,
            ), [], _CIPHER)
    return paths


@dataclass
class Arrived:
    """One instance a destination received: its UID, the context's syntax, the dataset."""

    sop: str
    syntax: str
    ds: Dataset
    calling_ae: str


@dataclass
class Destination:
    """A Storage SCP on 127.0.0.1 that records every C-STORE (see the module notes)."""

    syntaxes: list[str] | None = None
    hold: bool = False
    abort_at: int = 0
    arrived: list[Arrived] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    server: Any = None

    def start(self) -> Destination:
        ae = AE(ae_title="DESTINATION")
        for sop_class in (CTImageStorage, MRImageStorage):
            ae.add_supported_context(sop_class, self.syntaxes or [ExplicitVRLittleEndian,
                                                                  ImplicitVRLittleEndian])
        self.server = ae.start_server(("127.0.0.1", 0), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        return self

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def sops(self) -> list[str]:
        return sorted(arrived.sop for arrived in self.arrived)

    def _on_store(self, event: Any) -> int:
        if self.abort_at and len(self.arrived) + 1 == self.abort_at:
            event.assoc.abort()
            return 0xA700
        ds = event.dataset
        ds.file_meta = event.file_meta
        self.arrived.append(Arrived(str(ds.SOPInstanceUID), str(event.context.transfer_syntax),
                                    ds, str(event.assoc.requestor.ae_title).strip()))
        if self.hold and len(self.arrived) > 1:
            self.released.wait(10)
        return 0x0000

    def stop(self) -> None:
        self.released.set()
        if self.server is not None:
            self.server.shutdown()
            self.server = None
