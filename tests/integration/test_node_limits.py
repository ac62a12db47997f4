"""The node's limits under a flood and its presentation-context policy (RELIABILITY T10,
T18, T19), driven by the raw peer (tests/rawpeer.py).

- T10: a burst of bare TCP connects, then more simultaneous A-ASSOCIATE-RQs
  than ``limits.max_associations``: those past the limit get A-ASSOCIATE-RJ
  (2, 3, 2) (transient, presentation, local limit exceeded, PS3.8 9.3.4) or a
  close; an association already in progress is served; afterwards an echo
  works and threads, descriptors and RSS are back or bounded (I4).
- T18: Deflated Explicit VR Little Endian is not offered: its contexts get
  result 4, transfer syntaxes not supported (PS3.8 Table 9-18).
- T19: an unknown or private SOP Class gets result 3, abstract syntax not
  supported; pynetdicom's ``UNRESTRICTED_STORAGE_SERVICE`` stays off.
- T11: a path, letters or NUL padding in a C-STORE-RQ's Affected SOP Instance
  UID: aborted or 0xA900, and no file written.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pynetdicom import _config as pynetdicom_config
from pynetdicom.dsutils import encode
from pynetdicom.pdu import A_ASSOCIATE_AC

from gateway.reuseport import BACKLOG, connection_cap
from tests.conftest import require_tool, wait_until
from tests.corpus import make_clinic_study
from tests.rawpeer import (
    FAST,
    IMPLICIT_LE,
    VERIFICATION,
    Closed,
    RawPeer,
    Reply,
    associate_rq,
    closed_within,
    dimse_status,
    echo_rq,
    echo_works,
    recovered,
    release_rq,
    rss_kib,
    store_rq,
    warmed_up,
)

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
MAX_ASSOCIATIONS = 4
REQUESTS = 40
CONNECTS = 20


@pytest.fixture
def fast_node(make_node: Callable[..., Any]) -> Any:
    """A node with one-second timeouts and four associations at most, warmed up.

    The ACSE and network timeouts are longer: under the flood a request may wait more
    than a second to be read, and the association kept up through it must not end of
    its own idleness while the test reads forty replies."""
    return warmed_up(make_node(**{**FAST, "limits.acse_timeout": 3, "limits.network_timeout": 10,
                                  "limits.max_associations": MAX_ASSOCIATIONS}))


def _accepted_syntaxes(reply: Reply | Closed) -> dict[int, tuple[int, str | None]]:
    assert isinstance(reply, Reply) and isinstance(reply.decoded, A_ASSOCIATE_AC), reply
    return {cx.context_id: (cx.result, None if cx.transfer_syntax is None
                            else str(cx.transfer_syntax))
            for cx in reply.decoded.presentation_context}


@pytest.mark.slow  # a flood and its recovery: run in CI, not in every developer run
def test_a_flood_past_the_association_limit_is_refused_and_the_node_recovers(
        fast_node: Any) -> None:
    """T10: 20 bare connects, then 40 simultaneous requests with a limit of 4: at most 4
    accepted, every other one RJ (2, 3, 2) or closed; an association already up is served
    throughout; then an echo works and threads, descriptors and RSS come back."""
    rss_before = rss_kib()
    for _ in range(CONNECTS):
        socket.create_connection(("127.0.0.1", fast_node.port), timeout=5).close()
    # the connects wait in the listen backlog, and each holds two threads until the
    # ACSE timeout once accepted (PS3.8 ARTIM): the node serves again once through them
    wait_until(lambda: echo_works(fast_node.port), timeout=20, what="an echo after the connects")
    wait_until(lambda: not fast_node.server.active_associations, timeout=10,
               what="the bare connections' associations ended")
    with RawPeer(fast_node.port) as in_flight:
        in_flight.send(associate_rq())
        assert getattr(in_flight.receive(), "pdu_type", None) == 0x02
        # each gets its answer, however long a loaded machine takes to accept 40 at once
        peers = [RawPeer(fast_node.port, timeout=20) for _ in range(REQUESTS)]
        try:
            for peer in peers:
                peer.send(associate_rq())
            replies = [peer.receive() for peer in peers]
            # the association that was up before the flood is still served
            in_flight.send(*echo_rq())
            assert dimse_status(in_flight.receive()) == 0x0000
            accepted = [p for p, r in zip(peers, replies) if getattr(r, "pdu_type", 0) == 0x02]
            for peer in accepted:
                peer.send(release_rq())
                assert [r.pdu_type for r in closed_within(peer, 5)] == [0x06]
        finally:
            for peer in peers:
                peer.close()
        in_flight.send(release_rq())
        assert [r.pdu_type for r in closed_within(in_flight, 5)] == [0x06]
    refused = [r for r in replies if getattr(r, "pdu_type", 0) != 0x02]
    assert len(accepted) <= MAX_ASSOCIATIONS - 1  # one place is the in-flight association's
    assert len(refused) >= REQUESTS - MAX_ASSOCIATIONS
    assert {r.rejection if isinstance(r, Reply) else "closed" for r in refused} <= {
        (2, 3, 2), "closed"}
    assert any(isinstance(r, Reply) for r in refused), "no A-ASSOCIATE-RJ at all"
    recovered(fast_node)
    assert rss_kib() - rss_before < 64 * 1024, "RSS grew by more than 64 MiB"


def test_the_listener_queues_a_burst_of_connections(make_node: Callable[..., Any]) -> None:
    """The listen backlog is gateway.reuseport.BACKLOG, not socketserver's 5: a burst of
    connections waits in the kernel's queue instead of in SYN retransmissions. Read with
    ``ss``, whose Send-Q column for a listening socket is its backlog."""
    node = make_node()
    ss = require_tool("ss", "iproute2")
    listed = subprocess.run([ss, "-Hltn", f"sport = :{node.port}"], capture_output=True,
                            text=True, check=True).stdout.split()
    assert listed[0] == "LISTEN" and listed[2] == str(BACKLOG), listed


def test_deflated_transfer_syntax_is_refused_per_context(fast_node: Any) -> None:
    """T18, PS3.8 Table 9-18: Deflated Explicit VR LE alone gets result 4 for storage and
    query; offered with Explicit VR LE, the latter is chosen."""
    with RawPeer(fast_node.port) as peer:
        peer.send(associate_rq((
            (1, CT_IMAGE, (DEFLATED,)),
            (3, STUDY_ROOT_FIND, (DEFLATED,)),
            (5, CT_IMAGE, (DEFLATED, EXPLICIT_LE)),
            (7, VERIFICATION, (IMPLICIT_LE,)),
        )))
        results = _accepted_syntaxes(peer.receive())
        peer.send(release_rq())
        closed_within(peer, 5)
    assert {cx: result for cx, (result, _) in results.items()} == {1: 4, 3: 4, 5: 0, 7: 0}
    assert results[5][1] == EXPLICIT_LE
    recovered(fast_node)


@pytest.mark.parametrize("sop_class", [
    pytest.param("1.2.3.4.5.6.7.8.9", id="unknown"),
    pytest.param("1.3.6.1.4.1.9590.100.1.2.999", id="private"),
])
def test_unknown_sop_class_is_refused_with_reason_3(fast_node: Any, sop_class: str) -> None:
    """T19, PS3.8 Table 9-18: result 3, abstract syntax not supported; the other context
    of the same association is accepted and works."""
    assert pynetdicom_config.UNRESTRICTED_STORAGE_SERVICE is False
    with RawPeer(fast_node.port) as peer:
        peer.send(associate_rq(((1, sop_class, (IMPLICIT_LE, EXPLICIT_LE)),
                                (3, VERIFICATION, (IMPLICIT_LE,)))))
        results = _accepted_syntaxes(peer.receive())
        peer.send(*echo_rq(context_id=3))
        assert dimse_status(peer.receive()) == 0x0000
        peer.send(release_rq())
        closed_within(peer, 5)
    assert {cx: result for cx, (result, _) in results.items()} == {1: 3, 3: 0}
    recovered(fast_node)


# -- T11: a path or a malformed UID in the command's Affected SOP Instance UID -------------

PLACEHOLDER = "1.2.3.4.5.6.7.8.90"  # as long as each bad value, so the lengths stay right


# pydicom warns about the bad UI value as the node decodes it (an error under this suite's
# filterwarnings, which would end the node's thread instead of what it does in service)
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning")
@pytest.mark.parametrize(("bad", "outcome"), [
    pytest.param(b"../../etc/cron.d/x", "abort", id="relative-path"),
    pytest.param(b"/abs/path/xxxxxxxx", "abort", id="absolute-path"),
    pytest.param(b"1.2.abc.4.5.6.7.89", "abort", id="letters"),
    pytest.param(b"1.2.3" + b"\0" * 13, 0xA900, id="nul-padded"),
])
def test_a_path_as_the_commands_instance_uid_writes_nothing(
        fast_node: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        bad: bytes, outcome: str | int) -> None:
    """T11, I3: the C-STORE-RQ's AffectedSOPInstanceUID (PS3.7 9.3.1.1) is a path, has
    letters or is NUL-padded: the association is aborted (pynetdicom decodes UIDs
    strictly) or the C-STORE gets 0xA900; no file is written anywhere, nothing spooled."""
    import tempfile

    receiving = fast_node.receiving_dir
    monkeypatch.setattr(tempfile, "tempdir", str(receiving))
    study = make_clinic_study(tmp_path / "study", series=1, per_series=1, jpeg=False)
    ds = dcmread(next(iter(study.files.values())))
    encoded = encode(ds, True, True)
    assert encoded is not None and len(bad) == len(PLACEHOLDER)
    command = ds.copy()
    command.SOPInstanceUID = PLACEHOLDER
    pdus = store_rq(command, encoded)
    pdus[0] = pdus[0].replace(PLACEHOLDER.encode(), bad)
    before = {p for p in tmp_path.rglob("*")}
    with RawPeer(fast_node.port) as peer:
        peer.send(associate_rq(((1, CT_IMAGE, (IMPLICIT_LE,)),)))
        assert getattr(peer.receive(), "context_results", None) == {1: 0}
        peer.send(*pdus)
        reply = peer.receive()
        if outcome == "abort":
            assert isinstance(reply, Reply) and reply.pdu_type == 0x07
        else:
            assert dimse_status(reply) == outcome
            peer.send(release_rq())
        closed_within(peer, 5)
    wait_until(lambda: not any(receiving.iterdir()), timeout=5, what="no file left received")
    assert fast_node.app.spool.depth() == 0
    assert {p for p in tmp_path.rglob("*")} - before == set()
    assert not Path("/etc/cron.d/x").exists() and not Path("/abs").exists()
    recovered(fast_node)


def test_a_bare_connect_holds_no_thread_until_the_acse_timeout(
        make_node: Callable[..., Any]) -> None:
    """gateway.unrequested, PS3.8 AA-5: a connection closed before its A-ASSOCIATE-RQ ends
    its association at once; pynetdicom alone keeps the thread to the ACSE timeout (30 s)."""
    node = make_node(**{"limits.acse_timeout": 30})
    assert echo_works(node.port)
    for _ in range(5):
        socket.create_connection(("127.0.0.1", node.port), timeout=5).close()
    wait_until(lambda: not node.server.active_associations, timeout=5,
               what="the bare connections' associations ended well before the ACSE timeout")


def test_connections_past_the_cap_are_closed_on_accept(
        make_node: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
    """gateway.reuseport.connection_cap: with ``limits.max_associations`` 1, ten
    connections (2 x 1 + 8) are taken in; the eleventh is closed as soon as it is
    accepted, with one log line, long before any timeout; once those ten close, an
    echo works again."""
    node = make_node(**{"limits.max_associations": 1, "limits.acse_timeout": 30})
    cap = connection_cap(1)
    held = [RawPeer(node.port) for _ in range(cap)]
    try:
        wait_until(lambda: len(node.server.active_associations) == cap, timeout=10,
                   what=f"{cap} connections held")
        with caplog.at_level("WARNING", logger="gateway.reuseport"), \
                RawPeer(node.port) as extra:
            assert isinstance(extra.receive(timeout=5), Closed)
        assert [r.getMessage() for r in caplog.records
                if r.getMessage().startswith("connection refused at accept")]
    finally:
        for peer in held:
            peer.close()
    wait_until(lambda: echo_works(node.port), timeout=10, what="an echo once they closed")
