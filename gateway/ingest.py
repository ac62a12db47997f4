"""The ingest worker: spool -> de-identify -> file store -> one transaction -> release.

Durability contract 2 (ARCHITECTURE): each step is idempotent, keyed by the
(replaced) SOP Instance UID, which is a keyed function of the original:

1. claim the oldest spool entry (an atomic rename, so workers in any number
   of threads or processes never take the same one);
2. de-identify it (:func:`anonymizer.anonymize`), unless it comes from a
   peer with the ``results`` role: then it is a consultation result,
   matched to its case and re-identified for the clinic instead
   (:mod:`gateway.results`); an instance the engine
   cannot de-identify, or flags for review, is quarantined with the reason
   (an entry a person released after review, ``meta.released``, skips only
   the review flag: the residual-PHI gate and the rest still apply);
3. the same bytes already indexed: release, nothing else (a repeat costs
   time, not data); different bytes under a known UID: quarantine, never
   merge (RELIABILITY T22);
4. write the de-identified file (temporary name, rename); a value the
   index needs that pydicom cannot convert (text that does not decode in
   its character set, under strict reading) quarantines the entry with the
   reason: an exception escaping here would put it back in the spool, to
   fail again forever (I2: one final state);
5. group commit, for a batch of such instances: their files made durable
   together (one ``syncfs``, :meth:`storage.filestore.FileStore.sync`),
   then one transaction with their index rows, pseudonym map entries
   (originals encrypted) and audit records (one ``store`` record per sender
   and study of the batch, with its count of instances:
   :mod:`gateway.audittrail`); then their spool entries are
   released. A failure removes the written files and puts every entry of
   the batch back for a later attempt.

A crash anywhere is repaired at start-up: claimed entries return to the
spool (:meth:`storage.spool.Spool.recover`) and are processed again; a
file renamed into the store but never indexed is rewritten under the same
name. ``run_once`` is what ``serve``'s worker processes
(:mod:`gateway.workers`), ``ingest run --once`` and the tests all call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Container
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from anonymizer import AnonymizationError, Result, anonymize
import storage.audit as audit
import storage.index as index
import storage.quarantine as quarantine
from storage.db import session_scope
from storage.errors import StorageError
from storage.models import MapKind
from storage.records import InstanceRecord, MapEntry
from storage.spool import SpoolEntry

from .app import App
from .results import is_results_peer, receive_result

__all__ = ["BATCH", "BATCH_SECONDS", "IngestOutcome", "IngestReport", "run_once"]

logger = logging.getLogger(__name__)

#: values larger than this are read from the spool file only while being written out
_DEFER_BYTES = 1 << 20
#: instances committed together at most (one syncfs, one transaction: a group commit)
BATCH = 32
#: and a batch is not filled for longer than this, so that nothing waits long un-indexed
BATCH_SECONDS = 0.5


class IngestOutcome(str, Enum):
    STORED = "stored"
    ALREADY_PRESENT = "already_present"
    QUARANTINED = "quarantined"
    RETRY = "retry"


@dataclass(frozen=True)
class IngestReport:
    """Counts of one pass over the spool."""

    stored: int = 0
    already_present: int = 0
    quarantined: int = 0
    retry: int = 0

    def add(self, outcome: IngestOutcome) -> IngestReport:
        counts = {o: getattr(self, o.value) for o in IngestOutcome}
        counts[outcome] += 1
        return IngestReport(**{o.value: n for o, n in counts.items()})

    @property
    def total(self) -> int:
        return self.stored + self.already_present + self.quarantined + self.retry


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value)


#: PS3.5 Table 6.2-1: an IS value lies in -2^31..2^31-1 (and so fits an SQL INTEGER)
_IS_RANGE = range(-(2**31), 2**31)


def _int(ds: Dataset, keyword: str) -> int | None:
    """An IS value for the index, or None when absent, unreadable or out of IS's range."""
    value = ds.get(keyword)
    try:
        number = None if value in (None, "") else int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number is not None and number in _IS_RANGE else None


def _record(result: Result, entry: SpoolEntry, stored_path: str, size: int, sha256: str,
            received_sha256: str) -> InstanceRecord:
    ds = result.dataset
    return InstanceRecord(
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        patient_sex=_text(ds, "PatientSex"),
        patient_birth_date=_text(ds, "PatientBirthDate"),
        study_instance_uid=result.study_instance_uid,
        study_date=_text(ds, "StudyDate"),
        study_time=_text(ds, "StudyTime"),
        accession_number=_text(ds, "AccessionNumber"),
        study_id=_text(ds, "StudyID"),
        study_description=_text(ds, "StudyDescription"),
        referring_physician_name=_text(ds, "ReferringPhysicianName"),
        series_instance_uid=result.series_instance_uid,
        modality=_text(ds, "Modality"),
        series_number=_int(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription"),
        body_part_examined=_text(ds, "BodyPartExamined"),
        sop_instance_uid=result.sop_instance_uid,
        sop_class_uid=_text(ds, "SOPClassUID"),
        instance_number=_int(ds, "InstanceNumber"),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        file_path=stored_path,
        file_size=size,
        sha256=sha256,
        received_sha256=received_sha256,
        received_at=entry.meta.received_at,
        calling_ae_title=entry.meta.calling_ae_title,
        source_peer=entry.meta.source_peer,
    )


def _map_entries(result: Result, sex: str = "") -> list[MapEntry]:
    """What re-identification needs, keyed by the replaced values (originals get encrypted)."""
    study = result.study_instance_uid
    name, _, birth_date = result.patient.fallback.rpartition("|")
    patient = json.dumps({"patient_id": result.patient.patient_id,
                          "issuer_of_patient_id": result.patient.issuer,
                          "patient_name": name, "patient_birth_date": birth_date,
                          "patient_sex": sex},
                         sort_keys=True)
    entries = [
        MapEntry(kind=MapKind.PATIENT, pseudonym=result.pseudonym.patient_id, original=patient,
                 study_instance_uid=study),
        MapEntry(kind=MapKind.STUDY, pseudonym=study,
                 original=result.study.study_instance_uid, study_instance_uid=study),
        MapEntry(kind=MapKind.ACCESSION, pseudonym=study, original=result.study.accession_number,
                 study_instance_uid=study),
        MapEntry(kind=MapKind.STUDY_ID, pseudonym=study, original=result.study.study_id,
                 study_instance_uid=study),
    ]
    entries += [MapEntry(kind=MapKind.UID, pseudonym=new, original=old, study_instance_uid=study)
                for old, new in result.uid_map.items()]
    return entries


def _quarantine(app: App, entry: SpoolEntry, reason: str, sop: str | None = None) -> IngestOutcome:
    app.spool.quarantine(entry, reason)
    with session_scope(app.engine) as session:
        quarantine.record(session, entry.name, reason, entry.meta.calling_ae_title, sop)
        audit.record(session, "quarantine", entry.meta.calling_ae_title, "failure",
                     detail=reason)
    logger.warning("ingest spool=%s sop=%s state=quarantined reason=%r", entry.name, sop, reason)
    return IngestOutcome.QUARANTINED


@dataclass(frozen=True)
class _Prepared:
    """An instance de-identified and written (not yet durable), waiting for its batch's commit."""

    entry: SpoolEntry
    record: InstanceRecord
    map_entries: list[MapEntry]
    patient: str  # the pseudonym, for the log
    started: float


def _prepare(app: App, entry: SpoolEntry, batch_sops: Container[str], reader: Session
             ) -> IngestOutcome | _Prepared | None:
    """Steps 2-4 for one claimed entry; ``None`` when it must wait for the next batch.

    ``reader`` is the batch's read-only session, for the repeat check.
    """
    started = time.monotonic()
    if is_results_peer(reader, entry.meta.source_peer):  # a second opinion coming back
        return IngestOutcome(receive_result(app, entry))
    received_sha256 = _sha256(entry.path)
    try:
        # values over 1 MB stay on disk and stream through (anonymizer.streams)
        source = dcmread(entry.path, defer_size=_DEFER_BYTES)
        result = anonymize(source, app.profile, app.lookup)
        sex = str(source.get("PatientSex", "") or "")[:16]  # sealed in the map, for results
    except AnonymizationError as exc:
        return _quarantine(app, entry, str(exc))
    except Exception as exc:  # pydicom raises many types on broken input
        return _quarantine(app, entry, f"cannot be read ({type(exc).__name__})")
    sop = result.sop_instance_uid
    if sop in batch_sops:  # the same instance twice in one batch: it goes in the next one
        app.spool.unclaim(entry)
        return None
    if result.needs_review:
        if not entry.meta.released:
            return _quarantine(app, entry, "; ".join(result.needs_review), sop)
        # a person reviewed it (dicom-gateway study release); every other check still applies
        logger.info("ingest sop=%s review=released", sop)
    try:
        exists, known_sha = index.instance_exists(reader, sop)
    except SQLAlchemyError as exc:
        return _retry(app, entry, sop, exc)
    if exists and known_sha == received_sha256:
        app.spool.release(entry)
        logger.info("ingest sop=%s state=already_present", sop)
        return IngestOutcome.ALREADY_PRESENT
    if exists:
        return _quarantine(app, entry, "different content under a known SOP Instance UID", sop)

    def fill(fh: BinaryIO) -> None:
        dcmwrite(fh, result.dataset, enforce_file_format=True)

    try:
        # same instance, same received bytes: the same name, so a retry replaces its file
        stored = app.store.write(fill, key=f"{sop}|{received_sha256}", sync=False)
    except StorageError as exc:
        logger.error("ingest sop=%s state=retry reason=%r", sop, str(exc))
        app.spool.unclaim(entry)
        return IngestOutcome.RETRY
    try:
        record = _record(result, entry, stored.path, stored.size, stored.sha256,
                         received_sha256)
    except Exception as exc:  # a value pydicom cannot convert (strict reading): set it aside
        app.store.remove(stored.path)
        return _quarantine(app, entry, f"cannot be indexed ({type(exc).__name__})", sop)
    return _Prepared(entry, record, _map_entries(result, sex), result.pseudonym.patient_id,
                     started)


def _commit(app: App, batch: list[_Prepared]) -> list[IngestOutcome]:
    """Step 5 for a batch: its files made durable together, then one transaction, then release.

    A group commit: one ``syncfs`` and one database commit for the batch
    instead of one of each per instance. The durability contract holds: a
    spool entry is released only after its file is durable and its rows are
    committed; a failure puts every entry of the batch back in the spool.
    """
    if not batch:
        return []
    try:
        app.store.sync([p.record.file_path for p in batch])
        with session_scope(app.engine) as session:
            outcomes: list[index.AddOutcome | StorageError] = []
            stored: Counter[tuple[str, str, str]] = Counter()
            # map entries an earlier instance of this transaction wrote (the patient's,
            # the study's, the series'): the same pseudonym, the same original, not
            # sealed and offered again
            mapped: set[tuple[str, str]] = set()
            for prepared in batch:
                entries = [e for e in prepared.map_entries if (e.kind, e.pseudonym) not in mapped]
                try:
                    outcome = index.add_instance(session, prepared.record, entries, app.cipher)
                except StorageError as exc:  # a record the schema refuses: set it aside
                    outcomes.append(exc)
                    continue
                if outcome is index.AddOutcome.ADDED:
                    mapped.update((e.kind, e.pseudonym) for e in entries)
                    meta = prepared.entry.meta
                    stored[(meta.calling_ae_title, meta.source_peer or "-",
                            prepared.record.study_instance_uid)] += 1
                outcomes.append(outcome)
            for (calling_ae, peer, study), count in stored.items():  # one per sender and study
                audit.record(session, "store", calling_ae, "success", study_instance_uid=study,
                             detail=f"peer={peer} instances={count}")
    except (SQLAlchemyError, OSError, StorageError) as exc:
        logger.error("ingest batch=%d state=retry reason=%r", len(batch), type(exc).__name__)
        for prepared in batch:
            app.store.remove(prepared.record.file_path)
            app.spool.unclaim(prepared.entry)
        return [IngestOutcome.RETRY] * len(batch)
    done: list[IngestOutcome] = []
    indexed = [p.entry for p, result in zip(batch, outcomes)
               if result in (index.AddOutcome.ADDED, index.AddOutcome.ALREADY_PRESENT)]
    app.spool.release_all(indexed)
    for prepared, result in zip(batch, outcomes):
        entry, sop = prepared.entry, prepared.record.sop_instance_uid
        if isinstance(result, StorageError):
            app.store.remove(prepared.record.file_path)
            done.append(_quarantine(app, entry, str(result), sop))
        elif result is index.AddOutcome.CONFLICT:
            app.store.remove(prepared.record.file_path)  # its own name: never the indexed file
            done.append(_quarantine(app, entry,
                                    "different content under a known SOP Instance UID", sop))
        elif result is index.AddOutcome.ALREADY_PRESENT:
            # the same received bytes give the same file name: the file is the indexed one
            done.append(IngestOutcome.ALREADY_PRESENT)
        else:
            logger.info("ingest sop=%s study=%s patient=%s state=stored elapsed=%.3fs", sop,
                        prepared.record.study_instance_uid, prepared.patient,
                        time.monotonic() - prepared.started)
            done.append(IngestOutcome.STORED)
    return done


def _retry(app: App, entry: SpoolEntry, sop: str, exc: Exception) -> IngestOutcome:
    logger.error("ingest sop=%s state=retry reason=%r", sop, type(exc).__name__)
    app.spool.unclaim(entry)
    return IngestOutcome.RETRY


def run_once(app: App, limit: int | None = None, *,
             only: Container[str] | None = None) -> IngestReport:
    """Process spool entries until the spool is empty (or ``limit`` were taken).

    Entries go in batches of at most :data:`BATCH` instances, each batch
    filled for at most :data:`BATCH_SECONDS` (a batch never waits for more
    to arrive: it takes what is waiting). With ``only``, just the entries of
    those spool names are taken (what a ``dicom-gateway import`` spooled
    itself), so that its counts are its own.
    """
    report = IngestReport()
    while limit is None or report.total < limit:
        outcomes, drained = _batch(app, None if limit is None else limit - report.total, only)
        for outcome in outcomes:
            report = report.add(outcome)
        if drained or not outcomes or IngestOutcome.RETRY in outcomes:
            break  # empty, or the database or the disk is failing: back off, try later
    return report


def _batch(app: App, limit: int | None, only: Container[str] | None
           ) -> tuple[list[IngestOutcome], bool]:
    """Claim, prepare and commit one batch; the outcomes, and whether the spool ran dry."""
    outcomes: list[IngestOutcome] = []
    batch: list[_Prepared] = []
    deadline = time.monotonic() + BATCH_SECONDS
    drained = False
    with session_scope(app.engine, readonly=True) as reader:
        while len(batch) < BATCH and time.monotonic() < deadline:
            if limit is not None and len(batch) + len(outcomes) >= limit:
                break
            entry = app.spool.claim(only)
            if entry is None:
                drained = True
                break
            prepared = _prepare(app, entry, {p.record.sop_instance_uid for p in batch}, reader)
            if prepared is None:
                break
            if isinstance(prepared, _Prepared):
                batch.append(prepared)
                continue
            outcomes.append(prepared)
            if prepared is IngestOutcome.RETRY:
                break
    return outcomes + _commit(app, batch), drained
