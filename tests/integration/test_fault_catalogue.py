"""Which tests cover each case T01-T30 of the fault catalogue (shared/RELIABILITY.md).

``CATALOGUE`` maps every case to the tests that exercise it, as
``path::function``, and to a note saying what is left: ``covered`` when the
tests assert the table's expected behaviour, ``partial`` when some of the
case's inputs or expectations are not tested (the note says which), and
``not covered`` when nothing tests it yet. The tests below keep the map
honest: every case is listed, every named test exists as a top-level test
function of the named file, and a case that is not covered names no test.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]

RAW = "tests/integration/test_protocol_faults.py"
LIMITS = "tests/integration/test_node_limits.py"
RECEIVE = "tests/integration/test_node_receive.py"
FAULTS = "tests/integration/test_node_faults.py"
TLS = "tests/integration/test_tls.py"
BAD = "tests/integration/test_bad_datasets.py"
CHARSET = "tests/integration/test_charset_abuse.py"
AUDIT = "tests/integration/test_fault_audit.py"
DUPLICATES = "tests/integration/test_fault_duplicates.py"
DESTINATIONS = "tests/integration/test_fault_destinations.py"
CLOCK = "tests/integration/test_fault_clock.py"


class Case(NamedTuple):
    status: str  # covered | partial | not covered
    tests: tuple[str, ...]
    note: str = ""


CATALOGUE: dict[str, Case] = {
    "T01": Case("covered", (
        f"{RECEIVE}::test_unknown_caller_is_rejected_where_store_is_closed",
        f"{RECEIVE}::test_wrong_called_ae_title_is_rejected",
        f"{RAW}::test_an_unregistered_caller_is_rejected_and_audited",
        f"{AUDIT}::test_a_called_ae_mismatch_is_rejected_and_audited_as_a_security_alert",
    ), "RJ (1,1,3) and (1,1,7), each with its audit record; the Security Alert (110113) "
       "is asserted on the syslog copy for the called-AE mismatch"),
    "T02": Case("covered", (
        f"{TLS}::test_required_client_certificate_refuses_none_and_strangers",
        f"{AUDIT}::test_a_registered_ae_title_from_another_address_is_rejected_and_audited",
    ), "the address is checked for a peer pinned to one (peer add --pin-address); a "
       "peer's host is where the node sends, and is not checked on the way in"),
    "T03": Case("covered", (
        f"{RAW}::test_a_malformed_associate_rq_is_rejected",
        f"{RAW}::test_over_long_uids_in_items_get_an_abort_without_harm",
        f"{RAW}::test_more_than_128_contexts_and_duplicate_ids_get_one_answer_per_id",
        f"{RAW}::test_an_even_context_id_gets_a_rejection",
    ), "even context ID: RJ (1, 2, 1) from gateway.pduguard (pynetdicom alone lets its DUL "
       "thread die, no RJ); over-long UIDs get an A-ABORT (undecodable PDU) rather than an "
       "RJ"),
    "T04": Case("covered", (
        f"{RAW}::test_non_dicom_bytes_get_an_abort_and_the_connection_closed",
    )),
    "T05": Case("covered", (
        f"{RAW}::test_a_truncated_pdu_is_dropped_at_the_network_timeout",
        f"{RAW}::test_pdu_length_over_the_maximum_is_aborted_at_once",
        "tests/unit/test_pduguard.py::test_a_header_past_its_limit_is_answered_with_an_abort",
    ), "checked at the header (gateway.pduguard): A-ABORT (2, 6) before and after the "
       "association, RSS flat under the trickle"),
    "T06": Case("covered", (
        f"{RAW}::test_pdv_item_longer_than_its_pdu_gets_an_abort",
    )),
    "T07": Case("covered", (
        f"{RAW}::test_a_pdu_before_the_association_gets_an_abort",
        f"{RAW}::test_a_pdu_out_of_sequence_in_an_association_gets_an_abort",
        f"{RAW}::test_a_peer_abort_ends_the_association_quietly",
    )),
    "T08": Case("covered", (
        f"{RAW}::test_connect_then_silence_is_closed_at_the_acse_timeout",
        f"{RAW}::test_an_association_idle_mid_dataset_is_aborted_and_leaves_no_file",
        f"{RAW}::test_a_stalled_peer_does_not_stall_others",
    )),
    "T09": Case("covered", (
        f"{TLS}::test_a_silent_client_stalls_nobody",
        f"{TLS}::test_a_silent_client_is_dropped_after_the_handshake_timeout",
        f"{TLS}::test_tls_1_1_and_a_plain_client_are_refused_cleanly",
        f"{TLS}::test_required_client_certificate_refuses_none_and_strangers",
    )),
    "T10": Case("covered", (
        f"{LIMITS}::test_a_flood_past_the_association_limit_is_refused_and_the_node_recovers",
        f"{LIMITS}::test_connections_past_the_cap_are_closed_on_accept",
        f"{LIMITS}::test_a_bare_connect_holds_no_thread_until_the_acse_timeout",
        "tests/interop/test_flood.py"
        "::test_a_flood_at_catalogue_scale_is_refused_bounded_and_recovered_from",
    ), "5,000 connects and 2,000 requests against serve while a clinic stores: RJ (2, 3, 2) "
       "or closed on accept past the connection cap, threads bounded by the cap"),
    "T11": Case("covered", (
        f"{FAULTS}::test_path_as_dataset_sop_instance_uid_gets_a900_and_nothing_is_written",
        f"{LIMITS}::test_a_path_as_the_commands_instance_uid_writes_nothing",
        f"{AUDIT}::test_a_65_character_uid_is_refused_writes_nothing_and_is_audited",
    ), "paths, letters, NUL padding and 65 characters, in the dataset's and the command's "
       "UID; the audit record asserted for the 65-character cases (an aborted request is "
       "audited by gateway/commandcheck.py)"),
    "T12": Case("covered", (
        f"{RECEIVE}::test_dataset_uid_differing_from_the_request_gets_a900",
    )),
    "T13": Case("covered", (
        f"{RECEIVE}::test_truncated_dataset_gets_c000_and_nothing_is_kept",
        f"{RAW}::test_a_last_fragment_flag_arriving_early_gets_c000_and_keeps_nothing",
    ), "an element cut short, and a data set ended early by its last-fragment flag"),
    "T14": Case("covered", (
        f"{BAD}::test_a_huge_defined_length_in_a_small_dataset_gets_c000",
        f"{BAD}::test_an_item_stream_without_its_delimiter_gets_c000",
        f"{BAD}::test_an_endless_item_stream_is_aborted_at_the_cap_with_memory_flat",
        f"{BAD}::test_a_dataset_over_the_cap_that_ends_gets_a700",
    ), "scaled: up to 1 GB offered against a 1 MB cap, not 4 GB. The A-ABORT goes as soon "
       "as the cap is passed; what the peer sends after it is read and discarded until the "
       "ARTIM timeout (limits.acse_timeout) closes the connection (PS3.8 Sta13)"),
    "T15": Case("covered", (
        f"{BAD}::test_sequences_nested_past_the_limit_get_c000",
        f"{BAD}::test_sequences_nested_at_the_limit_are_stored",
    ), "65, 300 and 10,000 deep, defined and undefined lengths, refused at receive"),
    "T16": Case("covered", (
        f"{BAD}::test_rows_as_ul_ffffffff_gets_a900",
        f"{BAD}::test_an_unknown_vr_gets_c000",
        f"{BAD}::test_wrong_vrs_odd_lengths_and_huge_numbers_are_stored_deterministically",
    ), "Rows as UL 0xFFFFFFFF refused by the image check (A900); IS values outside "
       "-2^31..2^31-1 are left out of the index"),
    "T17": Case("covered", (
        f"{BAD}::test_an_image_without_its_pixels_gets_a900",
        "tests/integration/test_forward_destinations.py"
        "::test_an_image_that_cannot_be_decompressed_fails_alone_and_the_rest_is_sent",
        "tests/unit/test_retrieve.py::test_a_frame_no_decoder_takes_fails_its_sub_operation_only",
    ), "policy A900 at receive for native pixel data missing, empty or shorter than "
       "Rows x Columns x samples x bits x frames (README, conformance statement); longer is "
       "accepted (padding). Compressed pixel data is not decoded at receive: a frame no "
       "decoder takes fails only its own forward or C-GET/C-MOVE sub-operation, at once"),
    "T18": Case("covered", (
        f"{LIMITS}::test_deflated_transfer_syntax_is_refused_per_context",
    ), "refused per context (result 4), so no deflated bytes can be sent"),
    "T19": Case("covered", (
        f"{LIMITS}::test_unknown_sop_class_is_refused_with_reason_3",
    )),
    "T20": Case("covered", (
        f"{CHARSET}::test_hostile_text_is_stored_exactly_found_and_never_logged_raw",
        f"{CHARSET}::test_undecodable_text_under_strict_reading_is_quarantined_not_retried_forever",
    ), "through kept LO/CS attributes (PN is replaced by the pseudonym); log lines carry no "
       "value, so the log check shows nothing is logged raw rather than escaping"),
    "T21": Case("covered", (
        "tests/integration/test_import_preamble.py"
        "::test_an_executable_preamble_is_replaced_counted_and_audited",
        "tests/integration/test_import_preamble.py::test_anonymize_writes_a_zero_preamble",
    ), "export is checked as the stored files and the anonymize command's output"),
    "T22": Case("covered", (
        f"{RECEIVE}::test_the_same_instance_twice_is_stored_once",
        "tests/integration/test_ingest_batch.py"
        "::test_the_same_instance_twice_in_a_batch_is_indexed_once_and_keeps_its_file",
        "tests/integration/test_storage_index.py"
        "::test_a_study_under_another_patient_is_a_conflict_and_writes_nothing",
        f"{DUPLICATES}::test_the_same_bytes_again_are_acknowledged_and_not_forwarded_twice",
        f"{DUPLICATES}"
        "::test_different_content_under_a_known_uid_is_quarantined_audited_never_merged",
    ), "policy keep-first (README, Duplicates): (b) is acknowledged (durable in the spool), "
       "then quarantined with its reason and audited at ingest, not refused at receive"),
    "T23": Case("covered", (
        "tests/integration/test_node_find.py::test_result_cap_then_a700_and_the_association_goes_on",
        "tests/integration/test_node_find.py::test_cancel_mid_stream_ends_with_fe00_at_once",
        "tests/integration/test_node_find.py::test_bad_identifiers_get_a900",
        "tests/integration/test_node_find.py::test_each_peer_sees_its_scope",
        "tests/integration/test_node_find.py::test_identifiers_are_not_logged",
    ), "the cap answers A700, one of the table's two choices"),
    "T24": Case("covered", (
        "tests/integration/test_node_retrieve.py::test_unknown_move_destination_gets_a801",
        "tests/integration/test_node_retrieve.py::test_a_scoped_caller_moves_only_to_its_own_machine",
        f"{AUDIT}::test_a_refused_move_is_audited_as_a_security_alert",
    ), "refusals are Security Alerts (110113, Use of Restricted Function) on the syslog "
       "copy; a completed move's 110104 is asserted by test_audit_trail.py"),
    "T25": Case("covered", (
        f"{RAW}::test_an_abort_mid_store_keeps_the_acknowledged_and_discards_the_partial",
        f"{RAW}::test_a_tcp_reset_mid_store_keeps_the_acknowledged_and_discards_the_partial",
        f"{RAW}::test_an_association_idle_mid_dataset_is_aborted_and_leaves_no_file",
    ), "A-ABORT and TCP RST after two acknowledged C-STOREs: those two are indexed and "
       "forwarded once to a destination, the cut third leaves no file"),
    "T26": Case("partial", (
        "tests/interop/test_crash.py::test_kill_9_while_receiving_loses_no_acknowledged_instance",
        "tests/interop/test_forward_orthanc.py"
        "::test_kill_9_while_forwarding_300_instances_then_restart_delivers_each_once",
        "tests/interop/test_crashloop.py"
        "::test_kill_9_at_random_moments_loses_no_acknowledged_instance_and_doubles_none",
        "tests/interop/test_crashloop.py"
        "::test_kill_9_at_each_step_of_the_durability_contract_loses_nothing",
    ), "kill -9 at random moments (10 in the test, 200 in scripts/bench crashloop) and "
       "aimed at each named step (tests/crashpoint.py: written not fsync'd, fsync'd not "
       "answered, committed not released, delivered not recorded; twice each); not looped "
       "about 1,000 times. An instance delivered in the last moments before a kill is sent "
       "again after the restart (at most the forwarder's commit window; the destination "
       "keeps one copy per SOP Instance UID)"),
    "T27": Case("covered", (
        f"{FAULTS}::test_disk_full_gets_a700_keeps_nothing_and_recovers_when_space_frees",
        "tests/integration/test_fault_store_disk.py"
        "::test_a_full_store_disk_keeps_acknowledging_raises_the_alarm_and_forwarding_goes_on",
    ), "the spool's disk full: A700, nothing kept, recovery; the store's alone full: "
       "acknowledged instances wait in the spool with no file or row, status raises the "
       "disk alarm, routed studies are still forwarded, and all is indexed and sent once "
       "space frees (both on real tmpfs mounts)"),
    "T28": Case("covered", (
        "tests/integration/test_ingest_batch.py"
        "::test_a_database_failure_puts_the_whole_batch_back_and_keeps_no_file",
        "tests/integration/test_fault_database.py"
        "::test_a_database_outage_loses_no_acknowledged_instance",
    ), "to the durability contract chosen (Success once durable in the spool, the database "
       "written by ingest after it), so no A7xx: a store during the outage is acknowledged "
       "and indexed once the database is back; a new association gets RJ (2,3,1) after a "
       "bounded retry of the peer table; PostgreSQL cut through a TCP proxy, not stopped"),
    "T29": Case("covered", (
        "tests/integration/test_forward_queue.py"
        "::test_failed_attempts_back_off_then_the_job_is_a_dead_letter",
        "tests/integration/test_forward_queue.py"
        "::test_a_refused_instance_fails_the_job_and_only_it_is_sent_again",
        "tests/interop/test_forward_orthanc.py"
        "::test_an_institute_that_is_down_gets_the_study_once_it_is_back",
        f"{DESTINATIONS}::test_a_blackholed_destination_times_out_backs_off_and_holds_no_thread",
        f"{DESTINATIONS}::test_a_destination_refusing_every_instance_is_a_dead_letter_at_once",
        f"{DESTINATIONS}"
        "::test_a_destination_out_of_resources_is_retried_and_gets_the_study_once_it_recovers",
        f"{DESTINATIONS}"
        "::test_a_destination_with_an_expired_certificate_is_retried_not_sent_in_clear",
        f"{DESTINATIONS}::test_a_warning_status_counts_as_delivered",
        "tests/integration/test_storage_cases.py"
        "::test_a_case_follows_its_study_there_and_its_results_back",
    ), "refused, blackholed (ACSE timeout, capped back-off, dead letter, the pending-age "
       "alert of status), an expired TLS certificate (transient; the job's reason says the "
       "association failed, only the log says why), A700 and C000 (dead letter with the "
       "status, the failed-jobs alert), Bxxx counted as delivered. The only local purge, of "
       "re-identified results once the clinic has them, waits until the job is done, which "
       "is after Storage Commitment where the clinic supports it; de-identified studies are "
       "kept (no retention purge)"),
    "T30": Case("partial", (
        "tests/unit/test_schedule.py::test_the_window_follows_the_zone_and_daylight_saving",
        "tests/integration/test_forward_queue.py"
        "::test_late_instances_go_as_a_follow_up_with_only_themselves",
        f"{CLOCK}::test_a_step_back_of_an_hour_does_not_stop_the_clock",
        f"{CLOCK}::test_a_schedule_window_sends_once_however_the_clock_steps",
        f"{CLOCK}::test_a_wall_clock_step_neither_aborts_nor_holds_an_association",
        f"{CLOCK}::test_a_step_back_does_not_hold_a_retry_for_the_length_of_the_step",
        f"{CLOCK}::test_a_step_forward_does_not_take_a_job_from_its_own_running_lane",
    ), "a controllable wall clock steps +-1 h under the running node: its clock keeps "
       "firing, a window sends once, association timers are monotonic, a retry is not held "
       "for the length of a step back, and a step forward does not hand a job being sent to "
       "a second lane. Back-off and leases stay wall-clock times in the database (shared by "
       "nodes, kept over restarts): a step forward brings a retry early, and another node's "
       "step can expire this node's live lease (the destination keeps one copy per SOP "
       "Instance UID); not tested"),
}

STATUSES = {"covered", "partial", "not covered"}


@lru_cache(maxsize=None)
def _test_functions(path: str) -> frozenset[str]:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    return frozenset(node.name for node in tree.body
                     if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                     and node.name.startswith("test_"))


def test_every_case_of_the_catalogue_is_listed() -> None:
    assert list(CATALOGUE) == [f"T{n:02d}" for n in range(1, 31)]


@pytest.mark.parametrize("case", sorted(CATALOGUE))
def test_a_case_names_only_tests_that_exist(case: str) -> None:
    entry = CATALOGUE[case]
    assert entry.status in STATUSES
    assert bool(entry.tests) == (entry.status != "not covered"), (
        f"{case}: a covered or partial case names its tests; one not covered names none")
    assert entry.status == "covered" or entry.note, f"{case}: say what is left"
    for name in entry.tests:
        path, _, function = name.partition("::")
        assert (ROOT / path).is_file(), f"{case}: no file {path}"
        assert function in _test_functions(path), f"{case}: no test {name}"

