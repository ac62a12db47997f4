"""``dicom-gateway queue`` and ``study forward``: the forward queue from the command line.

``queue list [--state S] [--json]`` shows jobs newest first with their
instances counted by state and how delivery was confirmed; ``queue show ID
[--json]`` one job with its Storage Commitment requests and their results
(PS3.4 J.3: when asked and answered, committed, failed and why);
``queue retry ID`` or ``queue retry --failed`` sends failed (or cancelled)
jobs again, refused instances included; ``queue cancel ID`` stops a
pending job; ``queue run --once`` sends every due job now, without the node
(exit 1 when a job is left for a later attempt or failed). ``study forward
UID --to SLUG [--now]`` queues what the destination has not yet received
of a study (nothing delivered is queued again) and with ``--now`` sends it
at once. An unknown job, study or peer exits 3; a bad argument 2. Each
change is audited with the OS user.
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from typing import Any

import click
from sqlalchemy import select

import storage.audit as audit
import storage.commitments as commitments
import storage.jobs as jobs
import storage.peers as peers
from gateway.cli._context import AppContext, pass_app
from gateway.cli._exit import translate_errors
from gateway.cli._node import node_app, print_record, print_table, storage_failure
from gateway.errors import GatewayError, NotFoundError, UsageError
from gateway.forwarder import run_due
from storage.db import session_scope
from storage.errors import StorageError
from storage.models import Study
from storage.queue_models import JobState

__all__ = ["forward", "queue"]

_STATES = click.Choice([state.value for state in JobState])


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _job(record: jobs.JobRecord) -> dict[str, Any]:
    return {
        "id": record.id, "study_instance_uid": record.study_instance_uid,
        "destination": record.destination, "kind": record.kind.value,
        "state": record.state.value, "route": record.route, "priority": record.priority,
        "attempts": record.attempts, "next_attempt_at": record.next_attempt_at.isoformat(),
        "pending": record.pending, "sent": record.sent, "failed": record.failed,
        "confirmed_by": record.confirmed_by, "last_error": record.last_error,
        "created_at": record.created_at.isoformat(), "updated_at": record.updated_at.isoformat(),
    }


@click.group()
def queue() -> None:
    """The forward queue: list, retry, cancel and run jobs."""


@queue.command(name="list")
@click.option("--state", "states", type=_STATES, multiple=True, help="Only jobs in this state.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_app
@translate_errors
def list_(app: AppContext, states: tuple[str, ...], as_json: bool) -> None:
    """List jobs, newest first."""
    node = node_app(app)
    with session_scope(node.engine, readonly=True) as session:
        found = jobs.list_jobs(session, [JobState(state) for state in states])
    if as_json:
        click.echo(json.dumps([_job(record) for record in found], indent=2))
        return
    print_table(
        ["ID", "STATE", "KIND", "DESTINATION", "SENT", "PENDING", "FAILED", "ATTEMPTS",
         "CONFIRMED", "STUDY"],
        [[str(r.id), r.state.value, r.kind.value, r.destination, str(r.sent), str(r.pending),
          str(r.failed), str(r.attempts), r.confirmed_by or "-", r.study_instance_uid]
         for r in found])


def _commitment(record: commitments.CommitmentRecord) -> dict[str, Any]:
    return {
        "transaction_uid": record.transaction_uid, "requested": len(record.requested_uids),
        "requested_at": record.requested_at.isoformat(),
        "answered_at": record.answered_at.isoformat() if record.answered_at else None,
        "reported_by": record.reported_by, "event_type": record.event_type,
        "committed": record.committed, "failed": record.failed,
        "failures": [{"sop_instance_uid": uid, "failure_reason": reason}
                     for uid, reason in record.failures.items()],
    }


@queue.command()
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_app
@translate_errors
def show(app: AppContext, job_id: str, as_json: bool) -> None:
    """One job, how its delivery was confirmed, and its commitment requests."""
    number = _job_id(job_id)
    node = node_app(app)
    with session_scope(node.engine, readonly=True) as session:
        record = jobs.get(session, number)
        asked = commitments.list_for_job(session, number)
    if record is None:
        raise NotFoundError(f"job {number}: not found")
    shown = {**_job(record), "commitments": [_commitment(c) for c in asked]}
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    print_record({key: value for key, value in shown.items() if key != "commitments"})
    for found in asked:
        answer = (f"answered {found.answered_at.isoformat()} by {found.reported_by}: "
                  f"{found.committed} committed, {found.failed} failed"
                  if found.answered_at else "unanswered")
        click.echo(f"commitment {found.transaction_uid}: {len(found.requested_uids)} "
                   f"requested {found.requested_at.isoformat()}, {answer}")


def _job_id(value: str) -> int:
    if not value.isdigit():
        raise UsageError(f"ID: expected a job number, got {value!r}")
    return int(value)


@queue.command()
@click.argument("job_id", metavar="ID", required=False)
@click.option("--failed", "all_failed", is_flag=True, help="Every failed job.")
@pass_app
@translate_errors
def retry(app: AppContext, job_id: str | None, all_failed: bool) -> None:
    """Send a failed or cancelled job again (or every failed one)."""
    if (job_id is None) == (not all_failed):
        raise UsageError("retry: give either ID or --failed")
    node = node_app(app)
    now = datetime.now(UTC)
    try:
        with session_scope(node.engine) as session:
            ids = ([r.id for r in jobs.list_jobs(session, [JobState.FAILED])] if all_failed
                   else [_job_id(str(job_id))])
            for number in ids:
                if jobs.get(session, number) is None:
                    raise NotFoundError(f"job {number}: not found")
                record = jobs.retry(session, number, now)
                audit.record(session, "forward-retry", _actor(), "success",
                             study_instance_uid=record.study_instance_uid,
                             detail=f"job {number} to {record.destination}")
    except StorageError as exc:
        raise storage_failure(exc) from exc
    click.echo(f"retrying {len(ids)} job(s)")


@queue.command()
@click.argument("job_id", metavar="ID")
@pass_app
@translate_errors
def cancel(app: AppContext, job_id: str) -> None:
    """Stop a pending job."""
    number = _job_id(job_id)
    node = node_app(app)
    try:
        with session_scope(node.engine) as session:
            if jobs.get(session, number) is None:
                raise NotFoundError(f"job {number}: not found")
            record = jobs.cancel(session, number, datetime.now(UTC))
            audit.record(session, "forward-cancel", _actor(), "success",
                         study_instance_uid=record.study_instance_uid,
                         detail=f"job {number} to {record.destination}")
    except StorageError as exc:
        raise storage_failure(exc) from exc
    click.echo(f"job {number} cancelled")


def _send_now(app: AppContext) -> None:
    report = run_due(node_app(app))
    click.echo(f"done: {report.done}  retry later: {report.retried}  failed: {report.failed}")
    if report.retried or report.failed:
        raise GatewayError(f"forward: {report.retried + report.failed} job(s) not delivered; "
                           "see dicom-gateway queue list and the log")


@queue.command()
@click.option("--once", is_flag=True, help="Send every due job once and exit (required).")
@pass_app
@translate_errors
def run(app: AppContext, once: bool) -> None:
    """Send every due job now, without the node."""
    if not once:
        raise UsageError("--once: required; continuous forwarding runs inside: "
                         "dicom-gateway serve")
    _send_now(app)


@click.command()
@click.argument("uid")
@click.option("--to", "destination", required=True, metavar="SLUG",
              help="The destination peer (role destination).")
@click.option("--now", "send_now", is_flag=True, help="Send due jobs at once.")
@pass_app
@translate_errors
def forward(app: AppContext, uid: str, destination: str, send_now: bool) -> None:
    """Queue what a destination has not yet received of a study."""
    node = node_app(app)
    try:
        with session_scope(node.engine) as session:
            peer = peers.get(session, destination)
            if peer is None:
                raise NotFoundError(f"--to: no peer {destination!r}")
            if "destination" not in peer.roles:
                raise UsageError(f"--to: peer {destination!r} has no destination role")
            if session.scalar(select(Study.id).where(Study.study_instance_uid == uid)) is None:
                raise NotFoundError(f"study {uid}: not found")
            record = jobs.enqueue(session, uid, destination, datetime.now(UTC))
            audit.record(session, "forward-queued", _actor(), "success",
                         study_instance_uid=uid, detail=f"to {destination}")
    except StorageError as exc:
        raise storage_failure(exc) from exc
    if record is None:
        click.echo(f"nothing to send: {destination} has every instance of {uid}")
    else:
        click.echo(f"job {record.id}: {record.pending} instance(s) of {uid} to {destination}")
    if send_now:
        _send_now(app)
