"""``dicom-gateway study``: list, show, re-identify and delete indexed studies.

``list`` and ``show`` print pseudonymized values only. ``list`` takes the
filters a C-FIND at the STUDY level has, matched the same way by the same
SQL (PS3.4 C.2.2.2: ``*`` and ``?`` wildcards, person names ignoring case,
date ranges ``20240101-20240131``, ``20240101-`` or ``-20240131``, ``""``
for an empty value), and ``--peer SLUG`` shows only what that peer's scope
lets it find, so an administrator sees what a specialist would. ``reidentify`` prints
the original identifiers behind a study's pseudonyms, read from the
encrypted map, and writes an audit record naming the OS user. ``delete``
removes a study's index rows and files (audited). ``quarantine`` lists the
received files held back by the ingest worker; ``release NAME`` sends one
that a person reviewed back to the spool, marked released, and ingests it
(audited). An unknown study or quarantine entry exits 3.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import logging
from datetime import datetime
from typing import Any

import click

import storage.audit as audit
import storage.index as index
import storage.pseudomap as pseudomap
import storage.quarantine as quarantine_records
from gateway.cli._context import AppContext, pass_app
from gateway.cli._exit import translate_errors
from gateway.cli._node import node_app, print_record, print_table, storage_failure
from gateway.cli.queue import forward
from gateway.errors import GatewayError, NotFoundError, UsageError
from gateway.ingest import IngestOutcome, run_once
from storage.db import session_scope
from storage.errors import StorageError
from storage.matching import Match, MatchError, ValueKind, parse
from storage.peers import get as get_peer
from storage.records import StudySummary
from storage.search import Scope
from storage.studies import DEFAULT_LIMIT, StudyFilter, get_study, list_studies

__all__ = ["study"]

logger = logging.getLogger(__name__)


@click.group()
def study() -> None:
    """List, show, re-identify and delete indexed studies."""


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _not_found(uid: str) -> NotFoundError:
    return NotFoundError(f"study {uid} not found; see: dicom-gateway study list")


def _summary(item: StudySummary) -> dict[str, Any]:
    return {
        "study_instance_uid": item.study_instance_uid,
        "patient_id": item.patient_id,
        "patient_name": item.patient_name,
        "study_date": item.study_date,
        "study_description": item.study_description,
        "modalities_in_study": list(item.modalities_in_study),
        "number_of_study_related_series": item.number_of_study_related_series,
        "number_of_study_related_instances": item.number_of_study_related_instances,
        "source_peer": item.source_peer,
        "calling_ae_title": item.calling_ae_title,
        "state": item.state.value,
        "last_received_at": _time(item.last_received_at),
    }


def _match(option: str, values: tuple[str, ...] | str | None, kind: ValueKind) -> Match:
    given = [] if values is None else [values] if isinstance(values, str) else list(values)
    try:
        return parse([part for value in given for part in value.split("\\")], kind)
    except MatchError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _filter(patient: str | None, date: str | None, modality: tuple[str, ...],
            description: str | None, sender: str | None) -> StudyFilter:
    return StudyFilter(
        patient=_match("--patient", patient, ValueKind.TEXT),
        study_date=_match("--date", date, ValueKind.DATE),
        modality=_match("--modality", modality, ValueKind.TEXT),
        description=_match("--description", description, ValueKind.TEXT),
        sender=_match("--sender", sender, ValueKind.TEXT),
    )


@study.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option("--quarantined", is_flag=True, help="Only studies held in quarantine.")
@click.option("--patient", default=None, metavar="TEXT",
              help="PatientID or PatientName (pseudonyms; names ignore case; * and ?).")
@click.option("--date", default=None, metavar="RANGE",
              help="StudyDate: YYYYMMDD, YYYYMMDD-YYYYMMDD, YYYYMMDD- or -YYYYMMDD.")
@click.option("--modality", multiple=True, metavar="CODE",
              help="A modality in the study (CT, MR, ...); repeat for any of several.")
@click.option("--description", default=None, metavar="TEXT",
              help="StudyDescription (case-sensitive; * and ?).")
@click.option("--sender", default=None, metavar="TEXT",
              help="The sending peer's slug or calling AE title (* and ?).")
@click.option("--peer", "peer_slug", default=None, metavar="SLUG",
              help="Only what this peer may find over C-FIND (its scope).")
@click.option("--limit", default=DEFAULT_LIMIT, show_default=True,
              type=click.IntRange(min=1), help="At most this many studies.")
@pass_app
@translate_errors
def list_(app: AppContext, as_json: bool, quarantined: bool, patient: str | None,
          date: str | None, modality: tuple[str, ...], description: str | None,
          sender: str | None, peer_slug: str | None, limit: int) -> None:
    """List indexed studies, newest first (pseudonymized values only), with C-FIND's filters."""
    where = _filter(patient, date, modality, description, sender)
    node = node_app(app)
    try:
        with session_scope(node.engine, readonly=True) as session:
            if peer_slug is not None:
                record = get_peer(session, peer_slug)
                if record is None:
                    raise NotFoundError(
                        f"peer {peer_slug!r} not found; see: dicom-gateway peer list")
                where = dataclasses.replace(where, scope=Scope(record.scope, record.slug))
            items = list_studies(session, limit=limit,
                                 quarantined=True if quarantined else None, where=where)
    except StorageError as exc:
        raise storage_failure(exc) from exc
    if as_json:
        click.echo(json.dumps([_summary(item) for item in items], indent=2))
        return
    if not items:
        click.echo("no studies", err=True)
        return
    header = ("STUDY UID", "PATIENT", "DATE", "DESCRIPTION", "MODALITIES", "SERIES",
              "INSTANCES", "SENDER", "STATE")
    rows = [
        (item.study_instance_uid, item.patient_id, item.study_date, item.study_description,
         ",".join(item.modalities_in_study), str(item.number_of_study_related_series),
         str(item.number_of_study_related_instances),
         item.source_peer or item.calling_ae_title, item.state.value)
        for item in items
    ]
    print_table(header, rows)


@study.command()
@click.argument("uid")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_app
@translate_errors
def show(app: AppContext, uid: str, as_json: bool) -> None:
    """Show one study and its series (pseudonymized values only)."""
    node = node_app(app)
    try:
        with session_scope(node.engine, readonly=True) as session:
            detail = get_study(session, uid)
    except StorageError as exc:
        raise storage_failure(exc) from exc
    if detail is None:
        raise _not_found(uid)
    data: dict[str, Any] = {
        "study_instance_uid": detail.study_instance_uid,
        "patient_id": detail.patient_id,
        "patient_name": detail.patient_name,
        "patient_sex": detail.patient_sex,
        "patient_birth_date": detail.patient_birth_date,
        "study_date": detail.study_date,
        "study_time": detail.study_time,
        "accession_number": detail.accession_number,
        "study_id": detail.study_id,
        "study_description": detail.study_description,
        "modalities_in_study": list(detail.modalities_in_study),
        "sop_classes_in_study": list(detail.sop_classes_in_study),
        "number_of_study_related_series": detail.number_of_study_related_series,
        "number_of_study_related_instances": detail.number_of_study_related_instances,
        "source_peer": detail.source_peer,
        "calling_ae_title": detail.calling_ae_title,
        "state": detail.state.value,
        "first_received_at": _time(detail.first_received_at),
        "last_received_at": _time(detail.last_received_at),
    }
    series = [
        {
            "series_instance_uid": item.series_instance_uid,
            "modality": item.modality,
            "series_number": item.series_number,
            "series_description": item.series_description,
            "body_part_examined": item.body_part_examined,
            "number_of_series_related_instances": item.number_of_series_related_instances,
        }
        for item in detail.series
    ]
    if as_json:
        click.echo(json.dumps({**data, "series": series}, indent=2))
        return
    print_record(data)
    click.echo("")
    print_table(
        ("SERIES UID", "NUMBER", "MODALITY", "DESCRIPTION", "INSTANCES"),
        [
            (item.series_instance_uid,
             "" if item.series_number is None else str(item.series_number),
             item.modality, item.series_description,
             str(item.number_of_series_related_instances))
            for item in detail.series
        ],
    )


@study.command()
@click.argument("uid")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_app
@translate_errors
def reidentify(app: AppContext, uid: str, as_json: bool) -> None:
    """Print the original identifiers behind a study's pseudonyms (audited)."""
    node = node_app(app)
    actor = _actor()
    try:
        with session_scope(node.engine) as session:
            originals = pseudomap.originals_for_study(session, node.cipher, uid)
            if originals:
                audit.record(session, "reidentify", actor, "success", study_instance_uid=uid)
        if not originals:
            with session_scope(node.engine) as session:
                audit.record(session, "reidentify", actor, "failure",
                             detail="study not found")
    except StorageError as exc:
        raise storage_failure(exc) from exc
    if not originals:
        raise _not_found(uid)
    patient: dict[str, Any] = {}
    if "patient" in originals:
        try:
            loaded = json.loads(originals["patient"])
        except ValueError:
            loaded = {"patient_id": originals["patient"]}
        if isinstance(loaded, dict):
            patient = loaded
    data = {
        "study_instance_uid": uid,
        "original_patient_id": patient.get("patient_id"),
        "original_patient_name": patient.get("patient_name"),
        "original_issuer_of_patient_id": patient.get("issuer_of_patient_id"),
        "original_study_instance_uid": originals.get("study"),
        "original_accession_number": originals.get("accession"),
        "original_study_id": originals.get("study_id"),
    }
    logger.info("study reidentified study=%s actor=%s", uid, actor)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    print_record(data)


@study.command()
@click.argument("uid")
@pass_app
@translate_errors
def delete(app: AppContext, uid: str) -> None:
    """Remove a study's index rows and files (audited)."""
    node = node_app(app)
    try:
        with session_scope(node.engine) as session:
            paths = index.delete_study(session, uid)
            if paths:
                audit.record(session, "study-delete", _actor(), "success",
                             study_instance_uid=uid, detail=f"{len(paths)} files")
    except StorageError as exc:
        raise storage_failure(exc) from exc
    if not paths:
        raise _not_found(uid)
    removed = sum(1 for path in paths if node.store.remove(path))
    click.echo(f"study {uid} deleted: {len(paths)} instances, {removed} files removed")


@study.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def quarantine(ctx: click.Context, as_json: bool) -> None:
    """List received files held in quarantine, oldest first (also: quarantine list)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(quarantine_list, as_json=as_json)


@quarantine.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_app
@translate_errors
def quarantine_list(app: AppContext, as_json: bool) -> None:
    """List received files held in quarantine, oldest first."""
    node = node_app(app)
    try:
        with session_scope(node.engine, readonly=True) as session:
            entries = quarantine_records.list_entries(session)
    except StorageError as exc:
        raise storage_failure(exc) from exc
    if as_json:
        click.echo(json.dumps([
            {"spool_name": entry.spool_name, "reason": entry.reason,
             "calling_ae_title": entry.calling_ae_title,
             "sop_instance_uid": entry.sop_instance_uid, "at": _time(entry.at)}
            for entry in entries
        ], indent=2))
        return
    if not entries:
        click.echo("nothing in quarantine", err=True)
        return
    print_table(
        ("NAME", "CALLING AE", "TIME", "REASON"),
        [(entry.spool_name, entry.calling_ae_title, _time(entry.at) or "", entry.reason)
         for entry in entries],
    )


@study.command()
@click.argument("name")
@pass_app
@translate_errors
def release(app: AppContext, name: str) -> None:
    """Release a reviewed quarantine entry (NAME from: study quarantine) and ingest it (audited).

    Only the review flag (burned-in annotation, a risky class without
    BurnedInAnnotation NO, an encapsulated document) is waived; the
    residual-PHI gate and every other check still apply.
    """
    node = node_app(app)
    actor = _actor()
    try:
        with session_scope(node.engine) as session:
            if not quarantine_records.mark_released(session, name):
                raise NotFoundError(
                    f"quarantine entry {name} not found; see: dicom-gateway study quarantine")
            # moved inside the transaction: when the move fails, the row stays held
            node.spool.release_from_quarantine(name)
            audit.record(session, "quarantine-release", actor, "success", detail=f"spool={name}")
    except StorageError as exc:
        raise storage_failure(exc) from exc
    logger.info("quarantine released spool=%s actor=%s", name, actor)
    report = run_once(node, only=frozenset({name}))
    if report.stored:
        click.echo(f"released {name}: stored")
    elif report.already_present:
        click.echo(f"released {name}: already present")
    elif report.quarantined:
        raise GatewayError(f"released {name}, but it was quarantined again; "
                           "see: dicom-gateway study quarantine")
    else:
        outcome = IngestOutcome.RETRY.value if report.retry else "queued"
        click.echo(f"released {name}: {outcome}; the node or: dicom-gateway ingest run --once "
                   "finishes it")


study.add_command(forward)  # dicom-gateway study forward: gateway/cli/queue.py
