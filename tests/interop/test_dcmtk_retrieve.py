"""DCMTK's movescu and getscu against the node started as a user starts it.

Real files in the node's store (tests/retrieve_store.py). movescu moves a
whole study and a single series to a DCMTK storescp on loopback that is
registered as a destination peer; getscu gets a whole study and a single
series back on its own association (SCP/SCU role selection). What arrives
is read back from disk: exactly the expected SOP Instance UIDs, and the
final status DCMTK reports. A move to an unknown AE gets 0xA801.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread

from storage.db import make_engine
from storage.filestore import FileStore
from storage.models import PeerScope
from storage.schema import upgrade
from tests.conftest import require_tool, wait_until
from tests.interop.conftest import ServedNode, free_port
from tests.query_index import add_peer
from tests.retrieve_store import of_series, of_study, store_items

pytestmark = pytest.mark.interop

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


@dataclass
class StoreSCP:
    """A DCMTK storescp process and the folder it writes to."""

    port: int
    folder: Path
    process: subprocess.Popen[bytes]

    def received(self) -> list[str]:
        return _sops(self.folder)

    def clear(self) -> None:
        for path in self.folder.iterdir():
            path.unlink()


def _sops(folder: Path) -> list[str]:
    return sorted(str(dcmread(path).SOPInstanceUID) for path in folder.iterdir()
                  if path.is_file())


def _echo(port: int, ae_title: str) -> bool:
    run = subprocess.run([require_tool("echoscu", "dcmtk"), "-aec", ae_title, "-to", "2",
                          "127.0.0.1", str(port)], capture_output=True, check=False,
                         env=DCMTK_ENV)
    return run.returncode == 0


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreSCP]:
    folder = tmp_path / "storescp"
    folder.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [require_tool("storescp", "dcmtk"), "-aet", "STORESCP", "-od", str(folder),
         str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
    try:
        wait_until(lambda: _echo(port, "STORESCP"), timeout=30, what="storescp answers C-ECHO")
        yield StoreSCP(port, folder, process)
    finally:
        process.terminate()
        process.wait(20)


@pytest.fixture
def stored_node(serve: Callable[..., ServedNode], db_url: str, tmp_path: Path,
                storescp: StoreSCP) -> ServedNode:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        store_items(engine, FileStore(tmp_path / "var" / "store"))
        add_peer(engine, "viewer", "MOVESCU", ("query", "retrieve"), PeerScope.ALL)
        add_peer(engine, "getter", "GETSCU", ("retrieve",), PeerScope.ALL)
        add_peer(engine, "storescp", "STORESCP", ("destination",), port=storescp.port)
    finally:
        engine.dispose()
    return serve(data_dir=tmp_path / "var")


def _run(argv: list[str]) -> str:
    run = subprocess.run(argv, capture_output=True, text=True, env=DCMTK_ENV, check=False,
                         timeout=120)
    return f"exit={run.returncode}\n{run.stdout}{run.stderr}"


def _movescu(node: ServedNode, destination: str, *keys: str) -> str:
    argv = [require_tool("movescu", "dcmtk"), "-d", "-S", "-aet", "MOVESCU", "-aec", "GATEWAY",
            "-aem", destination]
    for key in keys:
        argv += ["-k", key]
    return _run([*argv, "127.0.0.1", str(node.port)])


def _getscu(node: ServedNode, folder: Path, *keys: str) -> str:
    folder.mkdir()
    argv = [require_tool("getscu", "dcmtk"), "-v", "-S", "-aet", "GETSCU", "-aec", "GATEWAY",
            "-od", str(folder)]
    for key in keys:
        argv += ["-k", key]
    return _run([*argv, "127.0.0.1", str(node.port)])


def _final(output: str) -> tuple[str, str, str]:
    """The status, completed and failed counts of the final C-MOVE response movescu printed (-d)."""
    block = output.rpartition("Received Final Move Response")[2]
    found = [re.search(rf"{name}\s*:\s*(\S+)", block) for name in
             ("DIMSE Status", "Completed Suboperations", "Failed Suboperations")]
    status, completed, failed = (match.group(1).rstrip(":") if match else "" for match in found)
    return status.lower(), completed, failed


def _get_counts(output: str) -> tuple[str, str]:
    """The completed and failed counts of getscu's final status report."""
    block = output.rpartition("Final status report")[2]
    found = [re.search(rf"Number of {name} Suboperations\s*:\s*(\S+)", block)
             for name in ("Completed", "Failed")]
    completed, failed = (match.group(1) if match else "" for match in found)
    return completed, failed


def test_movescu_a_study_and_a_series_to_storescp(stored_node: ServedNode,
                                                  storescp: StoreSCP) -> None:
    output = _movescu(stored_node, "STORESCP", "QueryRetrieveLevel=STUDY",
                      "StudyInstanceUID=2.25.2001")
    assert output.startswith("exit=0"), output[-3000:]
    assert storescp.received() == of_study("2.25.2001"), output[-3000:]
    assert _final(output) == ("0x0000", "5", "0"), output[-3000:]
    storescp.clear()
    output = _movescu(stored_node, "STORESCP", "QueryRetrieveLevel=SERIES",
                      "StudyInstanceUID=2.25.2001", "SeriesInstanceUID=2.25.2001.2")
    assert output.startswith("exit=0"), output[-3000:]
    assert storescp.received() == of_series("2.25.2001.2"), output[-3000:]
    assert _final(output) == ("0x0000", "2", "0"), output[-3000:]


def test_movescu_to_an_unknown_destination_gets_a801(stored_node: ServedNode,
                                                     storescp: StoreSCP) -> None:
    output = _movescu(stored_node, "NOSUCHAE", "QueryRetrieveLevel=STUDY",
                      "StudyInstanceUID=2.25.2001")
    assert _final(output)[0] == "0xa801", output[-3000:]
    assert storescp.received() == []


def test_getscu_a_study_and_a_series(stored_node: ServedNode, tmp_path: Path) -> None:
    output = _getscu(stored_node, tmp_path / "study", "QueryRetrieveLevel=STUDY",
                     "StudyInstanceUID=2.25.2003")
    assert output.startswith("exit=0"), output[-3000:]
    assert _sops(tmp_path / "study") == of_study("2.25.2003"), output[-3000:]
    assert "Received C-GET Response (Success)" in output
    assert _get_counts(output) == ("2", "0"), output[-3000:]
    output = _getscu(stored_node, tmp_path / "series", "QueryRetrieveLevel=SERIES",
                     "StudyInstanceUID=2.25.2001", "SeriesInstanceUID=2.25.2001.1")
    assert output.startswith("exit=0"), output[-3000:]
    assert _sops(tmp_path / "series") == of_series("2.25.2001.1"), output[-3000:]
    assert _get_counts(output) == ("3", "0"), output[-3000:]
