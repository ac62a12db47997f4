"""Results in: objects a consulting institute stores back, matched to their case, re-identified.

ARCHITECTURE.md, who uses it (a consulting institute may send results
back); issue "the second opinion comes back". A peer with the ``results``
role stores objects it made from a study the node sent it: an SR, a KOS, a
secondary capture, a reworked series. The ingest worker hands each such
spool entry to :func:`receive_result` instead of de-identifying it as a new
study (:mod:`gateway.ingest`):

1. the UIDs the object references are collected: StudyInstanceUID,
   SeriesInstanceUID and ReferencedSOPInstanceUID wherever they stand (top
   level, evidence and referenced sequences, the study and series
   references of a KOS or SR);
2. they are looked up in the UID maps of the cases sent to *that*
   institute only, in the pseudonym space it saw (for an ``own`` space the
   node first computes the re-keyed UIDs and patient pseudonym it had not
   yet recorded); when none is known, the object's PatientID is looked up
   among the patient pseudonyms that institute holds (a new object that
   references nothing, such as a secondary capture in a study of its own).
   An object that matches no open case, or more than one, is quarantined
   with the reason: a result made with another institute's pseudonyms
   matches nothing (in ``shared`` spaces every institute sees the same
   pseudonyms: only ``own`` spaces keep them apart);
3. the original patient, study and UIDs are read from the sealed pseudonym
   map and the object is re-identified (:func:`anonymizer.reidentify.reidentify`):
   new UIDs for what the institute made come from the node's root
   (``node.uid_root``, :func:`pydicom.uid.generate_uid` with the
   institute's UID as entropy, so a repeat gives the same UIDs);
4. the re-identified copy is written to the file store and, in one
   transaction, recorded on the case (``answered``), audited
   (``reidentify``, naming the case and the institute's UID, no PHI) and
   queued to the clinic (the case's ``return_to`` peer, else the clinic
   itself when it has the ``destination`` role) through the forward queue,
   with its schedule and retry rules; then the spool entry is released.
   Once the clinic has it, its file is removed (:func:`purge_delivered`,
   fired by the node's clock).

The institute's own copy is never indexed, so no route, query or retrieve
ever reaches it; only the clinic's re-identified copy is sent, and only to
the clinic. Logs name the case, the institute and its pseudonymous UIDs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import BinaryIO

from pydicom import dcmread
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

import storage.audit as audit
import storage.cases as cases
import storage.jobs as jobs
import storage.peers as peers
import storage.pseudomap as pseudomap
import storage.quarantine as quarantine
from anonymizer import Option, PatientKey
from anonymizer.reidentify import (
    Originals,
    Provenance,
    reidentify,
    unread_elements,
    value_representation,
)
from storage.db import session_scope
from storage.errors import StorageError
from storage.spool import SpoolEntry

from .app import App

__all__ = ["fill_institute_uids", "is_results_peer", "purge_delivered", "receive_result",
           "referenced_uids", "return_peer"]

logger = logging.getLogger(__name__)

#: values larger than this are read from the spool file only while being written out
_DEFER_BYTES = 1 << 20
_REFERENCE_KEYWORDS = frozenset({"StudyInstanceUID", "SeriesInstanceUID",
                                 "ReferencedSOPInstanceUID"})


def is_results_peer(session: Session, slug: str | None) -> bool:
    """Whether what ``slug`` stores is results (the peer has the ``results`` role)."""
    if slug is None:
        return False
    peer = peers.get(session, slug)
    return peer is not None and "results" in peer.roles


def _values(ds: Dataset) -> Iterator[tuple[str, str]]:
    """Reference UIDs at any depth, reading only sequences and those (never pixel data)."""
    for raw in unread_elements(ds):
        if value_representation(raw) == "SQ":
            for item in ds[raw.tag].value:
                yield from _values(item)
        elif keyword_for_tag(raw.tag) in _REFERENCE_KEYWORDS:
            elem = ds[raw.tag]
            if elem.value in (None, ""):
                continue
            values = elem.value if isinstance(elem.value, list) or elem.VM > 1 else [elem.value]
            for value in values:
                yield elem.keyword, str(value).strip().rstrip("\0")


def referenced_uids(ds: Dataset) -> set[str]:
    """The study, series and instance UIDs an object names, at any depth (its own SOP UID not)."""
    return {value for _keyword, value in _values(ds) if value}


def fill_institute_uids(app: App, session: Session, institute: str | None = None) -> int:
    """Compute the UIDs an ``own``-space institute holds for the UIDs it was sent.

    The forwarder re-keys each instance with the destination's space at
    send time (:func:`anonymizer.anonymize` with ``app.rekey_profile``):
    a keyed, deterministic mapping, so the same UIDs are computed here.
    """
    retain = Option.RETAIN_UIDS in app.rekey_profile.options
    rows = cases.uids_to_fill(session, institute)
    cases.fill_uids(session, [
        (row_id, uid if retain else app.destination_space(slug).uid(uid))
        for row_id, slug, uid in rows])
    # the stored instance carries the node's pseudonym and no issuer (PS3.15 Table E.1-1:
    # IssuerOfPatientID is X), which is the patient key the re-keying derives from
    cases.fill_patients(session, [
        (case_id, app.destination_space(slug).patient(PatientKey("", patient_id)).patient_id)
        for case_id, slug, patient_id in cases.patients_to_fill(session, institute)])
    return len(rows)


def _quarantine(app: App, entry: SpoolEntry, reason: str) -> str:
    app.spool.quarantine(entry, reason)
    with session_scope(app.engine) as session:
        quarantine.record(session, entry.name, reason, entry.meta.calling_ae_title)
        audit.record(session, "result-quarantine", entry.meta.calling_ae_title, "failure",
                     detail=reason)
    logger.warning("result spool=%s from=%s state=quarantined reason=%r", entry.name,
                   entry.meta.source_peer, reason)
    return "quarantined"


def _originals(session: Session, app: App, study_uid: str) -> Originals | None:
    found = pseudomap.originals_for_study(session, app.cipher, study_uid)
    if "study" not in found or "patient" not in found:
        return None
    try:
        patient = json.loads(found["patient"])
    except ValueError:
        patient = {"patient_id": found["patient"]}
    if not isinstance(patient, dict):
        return None
    return Originals(
        patient_id=str(patient.get("patient_id") or ""),
        patient_name=str(patient.get("patient_name") or ""),
        issuer_of_patient_id=str(patient.get("issuer_of_patient_id") or ""),
        patient_birth_date=str(patient.get("patient_birth_date") or ""),
        patient_sex=str(patient.get("patient_sex") or ""),
        study_instance_uid=found["study"], accession_number=found.get("accession", ""),
        study_id=found.get("study_id", ""))


def _uid_originals(session: Session, app: App, case: cases.CaseRecord) -> dict[str, str]:
    """``{UID as the institute holds it: original UID}`` for every UID of the case's study.

    The object's own UIDs are not among them: what the institute made gets new UIDs.
    """
    node_uids = pseudomap.uid_originals(session, app.cipher, case.study_instance_uid)
    theirs_to_ours = cases.uid_map(session, case.id)
    if case.pseudonyms == "own" and Option.RETAIN_UIDS not in app.rekey_profile.options:
        space = app.destination_space(case.institute)
        theirs_to_ours.update({space.uid(ours): ours for ours in node_uids})
    else:
        theirs_to_ours.update({ours: ours for ours in node_uids})
    unknown = [ours for ours in theirs_to_ours.values() if ours not in node_uids]
    if unknown:
        node_uids.update(pseudomap.originals_of_uids(session, app.cipher, unknown))
    return {theirs: node_uids[ours] for theirs, ours in theirs_to_ours.items()
            if ours in node_uids}


def _match(app: App, entry: SpoolEntry, institute: str, ds: Dataset
           ) -> cases.CaseRecord | str:
    refs = referenced_uids(ds)
    with session_scope(app.engine) as session:
        fill_institute_uids(app, session, institute)
        hits = list(cases.match(session, institute, refs))
        by_patient = not hits
        if by_patient:  # nothing it references is known: the pseudonymous patient may be
            hits = cases.match_patient(session, institute, str(ds.get("PatientID", "") or ""))
        if len(hits) != 1:
            if not hits:
                return (f"result from {institute} matches no open case of that institute "
                        f"({len(refs)} UIDs referenced, patient unknown)")
            return (f"result from {institute} matches {len(hits)} cases "
                    f"({','.join(map(str, sorted(hits)))}) by "
                    f"{'patient only' if by_patient else 'the UIDs it references'}")
        found = cases.get(session, hits[0])
    assert found is not None
    return found


def receive_result(app: App, entry: SpoolEntry) -> str:
    """Match, re-identify, store and queue one result; ``stored``, ``already_present``,
    ``quarantined`` or ``retry`` (see the module docstring)."""
    institute = entry.meta.source_peer or ""
    try:
        # values over 1 MB (pixel data) stay in the spool file until written out
        ds = dcmread(entry.path, defer_size=_DEFER_BYTES)
        institute_sop = str(ds.SOPInstanceUID)
    except Exception as exc:  # pydicom raises many types on broken input
        return _quarantine(app, entry, f"result cannot be read ({type(exc).__name__})")
    try:
        found = _match(app, entry, institute, ds)
        if isinstance(found, str):
            return _quarantine(app, entry, found)
        case = found
        with session_scope(app.engine, readonly=True) as session:
            originals = _originals(session, app, case.study_instance_uid)
            uid_originals = _uid_originals(session, app, case)
    except (SQLAlchemyError, StorageError) as exc:
        logger.error("result spool=%s state=retry reason=%r", entry.name, type(exc).__name__)
        app.spool.unclaim(entry)
        return "retry"
    if originals is None:
        return _quarantine(app, entry, f"case {case.id}: the study's originals are not known")
    now = datetime.now(UTC)
    root = app.settings.node.uid_root
    try:
        out = reidentify(
            ds, originals, uid_originals,
            lambda uid: str(generate_uid(prefix=root, entropy_srcs=[institute, uid])),
            Provenance(institute=institute, received_at=entry.meta.received_at,
                       node_ae_title=app.settings.node.ae_title), now)
    except Exception as exc:  # pydicom raises many types on values it cannot handle
        return _quarantine(app, entry, f"case {case.id}: result cannot be re-identified "
                                       f"({type(exc).__name__})")

    def fill(fh: BinaryIO) -> None:
        dcmwrite(fh, out.dataset, enforce_file_format=True)

    try:
        with session_scope(app.engine, readonly=True) as session:
            repeat = cases.has_result(session, out.sop_instance_uid)
        if repeat:  # its file may be gone already (delivered): write nothing again
            app.spool.release(entry)
            logger.info("result case=%d from=%s sop=%s state=already_present", case.id,
                        institute, institute_sop)
            return "already_present"
        try:
            stored = app.store.write(fill, key=f"result|{out.sop_instance_uid}")
        except (StorageError, OSError):
            raise
        except Exception as exc:  # a value pydicom cannot encode: no file is left behind
            return _quarantine(app, entry, f"case {case.id}: result cannot be written "
                                           f"({type(exc).__name__})")
        with session_scope(app.engine) as session:
            outcome = _record(app, session, case, out.dataset, institute_sop, stored.path, now)
    except (SQLAlchemyError, StorageError, OSError) as exc:
        logger.error("result case=%d state=retry reason=%r", case.id, type(exc).__name__)
        app.spool.unclaim(entry)
        return "retry"
    app.spool.release(entry)
    logger.info("result case=%d from=%s sop=%s state=%s restored_uids=%d new_uids=%d",
                case.id, institute, institute_sop, outcome, out.restored_uids, out.new_uids)
    return outcome


def _record(app: App, session: Session, case: cases.CaseRecord, ds: Dataset,
            institute_sop: str, path: str, now: datetime) -> str:
    sop = str(ds.SOPInstanceUID)
    added = cases.add_result(
        session, case.id, sop_instance_uid=sop, sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        institute_sop_instance_uid=institute_sop, file_path=path, now=now)
    if not added:
        return "already_present"
    audit.record(session, "reidentify", case.institute, "success",
                 study_instance_uid=case.study_instance_uid,
                 detail=f"case={case.id} result={institute_sop}")
    target = return_peer(session, case)
    if target is None:
        audit.record(session, "result-return", case.institute, "failure",
                     study_instance_uid=case.study_instance_uid,
                     detail=f"case={case.id}: no destination peer to return results to")
        return "stored"
    job = jobs.enqueue_results(session, case.study_instance_uid, target, [sop], now)
    audit.record(session, "result-return", case.institute, "success",
                 study_instance_uid=case.study_instance_uid,
                 detail=f"case={case.id} to={target} job={job.id if job else '-'}")
    return "stored"


def return_peer(session: Session, case: cases.CaseRecord) -> str | None:
    """The peer results of a case go to: its ``return_to``, else the clinic if a destination."""
    for slug in (case.return_to, case.clinic):
        if slug is None:
            continue
        peer = peers.get(session, slug)
        if peer is not None and "destination" in peer.roles and slug != case.institute:
            return slug
    return None


def purge_delivered(app: App) -> int:
    """Remove the re-identified files the clinic has received; how many were removed.

    The node keeps de-identified data only (ARCHITECTURE.md, privacy model):
    a re-identified result lives in the store just until it is delivered,
    like an original in the spool until it is processed. The row stays, so
    ``case show`` still tells the trip and a repeat is still recognised.
    """
    with session_scope(app.engine, readonly=True) as session:
        found = cases.delivered_files(session)
    for result_id, path in found:
        app.store.remove(path)
        with session_scope(app.engine) as session:
            cases.forget_file(session, result_id)
    if found:
        logger.info("results delivered files_removed=%d", len(found))
    return len(found)
