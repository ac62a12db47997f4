"""``dicom-gateway case``: consultation cases, the round trip of a study to an institute and back.

``case list [--state S] [--institute SLUG] [--json]`` shows cases newest
first; ``case show ID [--json]`` tells the whole trip: the case (clinic,
institute, pseudonym space, state), the UID the institute holds for the
study, the forward jobs that took the study there and brought results back,
the results (the institute's UID and the clinic's new one) and the audit
records of the study; ``case close ID`` ends a case (results that still
come for it are quarantined); ``case return-to ID SLUG`` names the peer
results go to when it is not the clinic itself, and queues to it the
results still held (those that found no destination when they came). Everything shown is a
remapped UID, an institute's pseudonymous UID or a peer slug: no PHI. An
unknown case or peer exits 3, a bad argument 2; changes are audited with
the OS user.
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from typing import Any

import click

import storage.audit as audit
import storage.cases as cases
import storage.jobs as jobs
import storage.peers as peers
from gateway.cli._context import AppContext, pass_app
from gateway.cli._exit import translate_errors
from gateway.cli._node import node_app, print_record, print_table, storage_failure
from gateway.errors import NotFoundError, UsageError
from gateway.results import fill_institute_uids
from storage.case_models import CaseState
from storage.db import session_scope
from storage.errors import StorageError
from storage.queue_models import JobKind

__all__ = ["case"]

_STATES = click.Choice([state.value for state in CaseState])


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _case_id(value: str) -> int:
    if not value.isdigit():
        raise UsageError(f"ID: expected a case number, got {value!r}")
    return int(value)


def _case(record: cases.CaseRecord) -> dict[str, Any]:
    return {
        "id": record.id, "study_instance_uid": record.study_instance_uid,
        "institute": record.institute, "clinic": record.clinic,
        "return_to": record.return_to, "pseudonyms": record.pseudonyms,
        "state": record.state.value, "institute_study_instance_uid": record.institute_study_uid,
        "institute_patient_id": record.institute_patient_id,
        "instances": record.instances, "results": record.results,
        "created_at": record.created_at.isoformat(), "updated_at": record.updated_at.isoformat(),
    }


@click.group()
def case() -> None:
    """Consultation cases: studies sent to institutes and the results that came back."""


@case.command(name="list")
@click.option("--state", "states", type=_STATES, multiple=True, help="Only cases in this state.")
@click.option("--institute", default=None, metavar="SLUG", help="Only cases of this institute.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_app
@translate_errors
def list_(app: AppContext, states: tuple[str, ...], institute: str | None,
          as_json: bool) -> None:
    """List cases, newest first."""
    node = node_app(app)
    with session_scope(node.engine, readonly=True) as session:
        found = cases.list_cases(session, [CaseState(s) for s in states], institute=institute)
    if as_json:
        click.echo(json.dumps([_case(record) for record in found], indent=2))
        return
    print_table(
        ["ID", "STATE", "CLINIC", "INSTITUTE", "SPACE", "INSTANCES", "RESULTS", "STUDY"],
        [[str(r.id), r.state.value, r.clinic or "-", r.institute, r.pseudonyms,
          str(r.instances), str(r.results), r.study_instance_uid] for r in found])


def _trip(node_engine: Any, number: int) -> dict[str, Any]:
    with session_scope(node_engine, readonly=True) as session:
        record = cases.get(session, number)
        if record is None:
            raise NotFoundError(f"case {number}: not found")
        returning = set(cases.result_jobs(session, number))
        trip = [job for job in jobs.list_jobs(session, study_instance_uid=record.study_instance_uid)
                if (job.destination == record.institute and job.kind is not JobKind.RESULT)
                or job.id in returning]
        results = cases.results_of(session, number)
        events = audit.list_events(session, study_instance_uid=record.study_instance_uid)
    data = _case(record)
    data["jobs"] = [{"id": j.id, "kind": j.kind.value, "destination": j.destination,
                     "state": j.state.value, "sent": j.sent, "pending": j.pending,
                     "failed": j.failed, "updated_at": j.updated_at.isoformat()}
                    for j in reversed(trip)]
    data["results"] = [{"institute_sop_instance_uid": r.institute_sop_instance_uid,
                        "sop_instance_uid": r.sop_instance_uid, "sop_class_uid": r.sop_class_uid,
                        "received_at": r.received_at.isoformat()} for r in results]
    data["audit"] = [{"at": e.at.isoformat(), "event": e.event, "actor": e.actor,
                      "outcome": e.outcome.value, "detail": e.detail} for e in events]
    return data


@case.command()
@click.argument("case_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_app
@translate_errors
def show(app: AppContext, case_id: str, as_json: bool) -> None:
    """Show one case and its whole trip: jobs, results, audit records."""
    number = _case_id(case_id)
    node = node_app(app)
    try:
        with session_scope(node.engine) as session:
            fill_institute_uids(node, session)
        data = _trip(node.engine, number)
    except StorageError as exc:
        raise storage_failure(exc) from exc
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    print_record({key: value for key, value in data.items()
                  if key not in ("jobs", "results", "audit")})
    click.echo("")
    print_table(["JOB", "KIND", "DESTINATION", "STATE", "SENT", "PENDING", "FAILED"],
                [[str(j["id"]), j["kind"], j["destination"], j["state"], str(j["sent"]),
                  str(j["pending"]), str(j["failed"])] for j in data["jobs"]])
    click.echo("")
    print_table(["RECEIVED", "INSTITUTE SOP UID", "RETURNED AS"],
                [[r["received_at"], r["institute_sop_instance_uid"], r["sop_instance_uid"]]
                 for r in data["results"]])
    click.echo("")
    print_table(["AT", "EVENT", "ACTOR", "OUTCOME", "DETAIL"],
                [[e["at"], e["event"], e["actor"], e["outcome"], e["detail"]]
                 for e in data["audit"]])


@case.command()
@click.argument("case_id", metavar="ID")
@pass_app
@translate_errors
def close(app: AppContext, case_id: str) -> None:
    """Close a case: results that still come for it are quarantined."""
    number = _case_id(case_id)
    node = node_app(app)
    try:
        with session_scope(node.engine) as session:
            if cases.get(session, number) is None:
                raise NotFoundError(f"case {number}: not found")
            record = cases.close(session, number, datetime.now(UTC))
            audit.record(session, "case-close", _actor(), "success",
                         study_instance_uid=record.study_instance_uid, detail=f"case={number}")
    except StorageError as exc:
        raise storage_failure(exc) from exc
    click.echo(f"case {number} closed")


@case.command(name="return-to")
@click.argument("case_id", metavar="ID")
@click.argument("slug", metavar="SLUG")
@pass_app
@translate_errors
def return_to(app: AppContext, case_id: str, slug: str) -> None:
    """Send the results of a case to this destination peer instead of the clinic."""
    number = _case_id(case_id)
    node = node_app(app)
    try:
        with session_scope(node.engine) as session:
            if cases.get(session, number) is None:
                raise NotFoundError(f"case {number}: not found")
            peer = peers.get(session, slug)
            if peer is None:
                raise NotFoundError(f"SLUG: no peer {slug!r}")
            if "destination" not in peer.roles:
                raise UsageError(f"SLUG: peer {slug!r} has no destination role")
            now = datetime.now(UTC)
            record = cases.set_return_to(session, number, slug, now)
            # results still held (not yet delivered anywhere) go there now
            held = [r.sop_instance_uid for r in cases.results_of(session, number) if r.file_kept]
            job = (jobs.enqueue_results(session, record.study_instance_uid, slug, held, now)
                   if held else None)
            audit.record(session, "case-return-to", _actor(), "success",
                         study_instance_uid=record.study_instance_uid,
                         detail=f"case={number} to={slug} job={job.id if job else '-'}")
    except StorageError as exc:
        raise storage_failure(exc) from exc
    click.echo(f"case {number}: results return to {slug}"
               + (f"; job {job.id} queues {job.pending} held result(s)" if job else ""))
