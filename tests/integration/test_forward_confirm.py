"""Confirmed delivery (gateway.confirm, gateway.commitment): commitment, C-FIND, statuses.

The node's listener runs in-process on a free loopback port; the
destination is a pynetdicom :class:`~tests.commitment_peer.Institute` that
confirms as each test configures it. Jobs are sent with
:func:`gateway.forwarder.run_due`, as the node's clock does.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]
from sqlalchemy import select

import storage.commitments as commitments
import storage.jobs as jobs
import storage.peers as peers
from gateway.app import App, build_app
from gateway.forwarder import run_due
from gateway.ingest import run_once
from gateway.scp import start_listener
from storage.db import session_scope
from storage.models import Instance, Study
from storage.queue_models import ForwardJob, ItemState, JobState
from storage.records import PeerRecord
from storage.spool import SpoolMeta
from tests.commitment_peer import PUSH_MODEL_INSTANCE, Institute
from tests.conftest import TEST_KEY_HEX, node_settings, wait_until
from tests.corpus import make_clinic_study

META = SpoolMeta(calling_ae_title="CLINIC", called_ae_title="GATEWAY", source_peer=None,
                 received_at=datetime(2026, 11, 27, 12, 0, tzinfo=UTC),
                 peer_address="127.0.0.1")


@dataclass
class Node:
    """An app with its listener, a study of 3 CT instances ingested, and its institute."""

    app: App
    server: Any
    institute: Institute | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def destination(self, pseudonyms: str = "shared", **options: Any) -> Institute:
        """Start the institute, register it as peer ``institute``, queue the study for it."""
        self.institute = Institute(node_port=self.port, **options).start()
        with session_scope(self.app.engine) as session:
            peers.add(session, PeerRecord(slug="institute", ae_title=self.institute.ae_title,
                                          host="127.0.0.1", port=self.institute.port,
                                          roles=("destination",), pseudonyms=pseudonyms))
            study = str(session.scalars(select(Study.study_instance_uid)).one())
            job = jobs.enqueue(session, study, "institute", datetime.now(UTC))
        assert job is not None and job.pending == 3
        return self.institute

    def job(self) -> jobs.JobRecord:
        with session_scope(self.app.engine, readonly=True) as session:
            [record] = jobs.list_jobs(session)
        return record

    def commitment(self, transaction_uid: str) -> commitments.CommitmentRecord:
        with session_scope(self.app.engine, readonly=True) as session:
            record = commitments.get(session, transaction_uid)
        assert record is not None
        return record

    def stored_uids(self) -> set[str]:
        with session_scope(self.app.engine, readonly=True) as session:
            return set(session.scalars(select(Instance.sop_instance_uid)))


@pytest.fixture
def make_node(tmp_path: Path, db_url: str) -> Iterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(**overrides: object) -> Node:
        values: dict[str, object] = {"forward.commit_timeout_seconds": 10,
                                     "forward.first_delay_seconds": 1}
        values.update(overrides)
        app = build_app(node_settings(tmp_path, db_url, **values),
                        {"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX})
        node = Node(app, start_listener(app))
        made.append(node)
        study = make_clinic_study(tmp_path / "study", series=1, per_series=3, jpeg=False)
        (tmp_path / "spooled").mkdir()
        for path in study.files.values():
            copy = tmp_path / "spooled" / path.name
            copy.write_bytes(path.read_bytes())
            app.spool.accept(copy, META)
        assert run_once(app).stored == 3
        return node

    yield make
    for node in made:
        if node.institute is not None:
            node.institute.stop()
        node.server.shutdown()
        node.app.close()


def _later() -> datetime:
    return datetime.now(UTC) + timedelta(minutes=5)


@pytest.mark.parametrize("how", ["same", "new"])
def test_committed_on_the_same_or_a_new_association_with_the_uids_it_received(
    make_node: Callable[..., Node], cli: Callable[..., Result], db_url: str, how: str
) -> None:
    node = make_node()
    institute = node.destination(pseudonyms="own", commitment=how)

    assert run_due(node.app).done == 1

    job = node.job()
    assert (job.state, job.confirmed_by, job.sent, job.pending) == (
        JobState.DONE, "storage-commitment", 3, 0)
    [(transaction_uid, references)] = institute.actions
    # the request names the instances as the institute received them: re-keyed UIDs
    assert sorted(uid for _, uid in references) == sorted(institute.arrived)
    assert not {uid for _, uid in references} & node.stored_uids()
    assert {cls for cls, _ in references} == {"1.2.840.10008.5.1.4.1.1.2"}
    assert institute.reports == [(how, 0x0000)]
    record = node.commitment(transaction_uid)
    assert record.job_id == job.id and record.destination == "institute"
    assert (record.event_type, record.committed, record.failed, dict(record.failures)) == (
        1, 3, 0, {})
    assert record.answered_at is not None and record.answered_at >= record.requested_at

    shown = cli("queue", "show", str(job.id), "--json", DICOM_GATEWAY_DATABASE__URL=db_url)
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.stdout)
    assert document["confirmed_by"] == "storage-commitment"
    [asked] = document["commitments"]
    assert (asked["transaction_uid"], asked["requested"], asked["committed"], asked["failed"],
            asked["reported_by"]) == (transaction_uid, 3, 3, 0, "institute")
    listed = cli("queue", "list", DICOM_GATEWAY_DATABASE__URL=db_url)
    assert listed.exit_code == 0 and "storage-commitment" in listed.stdout
    assert cli("queue", "show", "999", DICOM_GATEWAY_DATABASE__URL=db_url).exit_code == 3


def test_a_failed_instance_is_sent_again_at_the_next_attempt(
    make_node: Callable[..., Node]
) -> None:
    node = make_node()
    institute = node.destination(commitment="new", fail_first=1)

    assert run_due(node.app).retried == 1
    job = node.job()
    assert (job.state, job.sent, job.pending) == (JobState.PENDING, 2, 1)
    assert "1 instance(s) not committed (0x0110)" in job.last_error
    [(first_uid, references)] = institute.actions
    failed_uid = references[0][1]
    record = node.commitment(first_uid)
    assert (record.event_type, record.committed, record.failed) == (2, 2, 1)
    assert dict(record.failures) == {failed_uid: 0x0110}

    assert run_due(node.app, now=_later()).done == 1
    job = node.job()
    assert (job.state, job.confirmed_by, job.sent, job.attempts) == (
        JobState.DONE, "storage-commitment", 3, 2)
    assert institute.arrived.count(failed_uid) == 2 and len(institute.arrived) == 4
    assert len(institute.actions) == 2 and len(institute.actions[1][1]) == 3


def test_no_answer_in_time_falls_back_and_a_late_report_is_still_recorded(
    make_node: Callable[..., Node]
) -> None:
    node = make_node(**{"forward.commit_timeout_seconds": 1})
    institute = node.destination(commitment="never")

    assert run_due(node.app).done == 1
    job = node.job()
    assert (job.state, job.confirmed_by) == (
        JobState.DONE, "c-store-status (commitment unanswered)")
    [(transaction_uid, references)] = institute.actions
    assert node.commitment(transaction_uid).answered_at is None

    event_type, info = institute.result(transaction_uid, references, [])
    assert institute.report_on_new_association(event_type, info) == 0x0000
    late = node.commitment(transaction_uid)
    assert late.answered_at is not None and late.committed == 3
    assert node.job().confirmed_by == "c-store-status (commitment unanswered)"


def test_the_lease_is_renewed_while_the_result_is_awaited(
    make_node: Callable[..., Node]
) -> None:
    node = make_node(**{"forward.lease_seconds": 10, "forward.commit_timeout_seconds": 30})
    node.destination(commitment="new", delay=5.0)
    leases: list[datetime] = []

    def lease() -> datetime | None:
        with session_scope(node.app.engine, readonly=True) as session:
            return session.scalar(select(ForwardJob.lease_expires_at))

    def renewed() -> bool:
        found = lease()
        if found is None:  # not leased yet
            return False
        leases.append(found)
        return found > leases[0]

    sender = threading.Thread(target=run_due, args=(node.app,))
    sender.start()
    try:
        wait_until(renewed, timeout=15, what="the lease renewed during the wait")
    finally:
        sender.join(60)
    job = node.job()
    assert (job.state, job.confirmed_by) == (JobState.DONE, "storage-commitment")


def test_no_answer_in_time_falls_back_to_c_find_when_it_answers_queries(
    make_node: Callable[..., Node]
) -> None:
    node = make_node(**{"forward.commit_timeout_seconds": 1})
    node.destination(commitment="never", find=True)

    assert run_due(node.app).done == 1
    assert node.job().confirmed_by == "c-find (commitment unanswered)"


def test_an_n_action_without_response_ends_the_association_and_falls_back(
    make_node: Callable[..., Node]
) -> None:
    node = make_node()
    institute = node.destination(commitment="abort", find=True)

    started = time.monotonic()
    assert run_due(node.app).done == 1
    assert time.monotonic() - started < 10, "waited for a response that never comes"
    job = node.job()
    assert (job.state, job.confirmed_by) == (JobState.DONE, "c-store-status (commitment refused)")
    [(transaction_uid, _)] = institute.actions
    assert node.commitment(transaction_uid).answered_at is None


def test_c_find_confirms_and_a_missing_instance_is_sent_again(
    make_node: Callable[..., Node]
) -> None:
    node = make_node()
    institute = node.destination(pseudonyms="own", find=True, lose=1)

    assert run_due(node.app).retried == 1
    job = node.job()
    assert (job.state, job.sent, job.pending) == (JobState.PENDING, 2, 1)
    assert "c-find: 1 instance(s) not found" in job.last_error
    lost = institute.arrived[0]
    assert lost not in institute.kept

    assert run_due(node.app, now=_later()).done == 1
    job = node.job()
    assert (job.state, job.confirmed_by, job.sent) == (JobState.DONE, "c-find", 3)
    assert institute.arrived.count(lost) == 2 and set(institute.kept) == set(institute.arrived)


def test_neither_commitment_nor_c_find_leaves_the_c_store_statuses(
    make_node: Callable[..., Node]
) -> None:
    node = make_node()
    institute = node.destination()

    assert run_due(node.app).done == 1
    job = node.job()
    assert (job.state, job.confirmed_by, job.sent) == (JobState.DONE, "c-store-status", 3)
    assert institute.actions == [] and len(institute.arrived) == 3


def test_the_listener_takes_reports_only_from_destinations_about_their_transactions(
    make_node: Callable[..., Node], caplog: pytest.LogCaptureFixture
) -> None:
    node = make_node(**{"forward.commit_timeout_seconds": 1})
    institute = node.destination(commitment="never")
    assert run_due(node.app).done == 1
    [(transaction_uid, references)] = institute.actions
    event_type, info = institute.result(transaction_uid, references, [])

    # an unknown Transaction UID: invalid argument value, and a log line
    _, unknown = institute.result("2.25.1234", references, [])
    with caplog.at_level(logging.WARNING, logger="gateway.commitment"):
        assert institute.report_on_new_association(event_type, unknown) == 0x0115
    assert "unknown transaction" in caplog.text
    # a caller that is no registered destination (loopback lets it store): not authorised
    assert institute.report_on_new_association(event_type, info, ae_title="STRANGER") == 0x0124
    # a caller proposing to be the SCU of Storage Commitment: the context is rejected
    assert institute.report_on_new_association(event_type, info, scu_role=True,
                                               scp_role=False) is None
    assert node.commitment(transaction_uid).answered_at is None
    # the node commits nothing for others
    assert _n_action(node.port, institute.ae_title) == 0x0124
    # and the destination itself is heard
    assert institute.report_on_new_association(event_type, info) == 0x0000
    assert node.commitment(transaction_uid).committed == 3


def _n_action(port: int, ae_title: str) -> int | None:
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", port, ae_title="GATEWAY")
    assert assoc.is_established
    try:
        action = Dataset()
        action.TransactionUID = "2.25.99"
        action.ReferencedSOPSequence = []
        status, _ = assoc.send_n_action(action, 1, StorageCommitmentPushModel,
                                        PUSH_MODEL_INSTANCE)
        return int(status.Status) if "Status" in status else None
    finally:
        assoc.release()


def _all_sent_before_a_crash(node: Node) -> None:
    """The job as a node killed while it awaited the commitment result leaves it.

    Every instance recorded as sent; the job back to pending once its lease expired.
    """
    with session_scope(node.app.engine) as session:
        jobs.record_items(session, node.job().id,
                          [(uid, ItemState.SENT, 0x0000) for uid in node.stored_uids()])


def test_a_job_sent_in_full_before_a_crash_is_confirmed_without_sending_again(
    make_node: Callable[..., Node]
) -> None:
    node = make_node()
    institute = node.destination(commitment="same")
    _all_sent_before_a_crash(node)

    assert run_due(node.app).done == 1

    job = node.job()
    assert (job.state, job.confirmed_by, job.sent, job.pending) == (
        JobState.DONE, "storage-commitment", 3, 0)
    assert institute.arrived == []  # nothing sent again
    [(_, references)] = institute.actions
    assert sorted(uid for _, uid in references) == sorted(node.stored_uids())


# pynetdicom 3.0 drops the socket of a refused connection without closing it
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_job_sent_in_full_whose_destination_cannot_confirm_keeps_the_statuses(
    make_node: Callable[..., Node]
) -> None:
    node = make_node()
    node.destination()
    assert node.institute is not None
    node.institute.stop()  # down now: the statuses of the earlier attempt stand
    _all_sent_before_a_crash(node)

    assert run_due(node.app).done == 1
    job = node.job()
    assert (job.state, job.confirmed_by, job.sent) == (JobState.DONE, "c-store-status", 3)
