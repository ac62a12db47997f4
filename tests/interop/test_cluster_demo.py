"""``scripts/cluster-demo``: three nodes that answer C-ECHO, and Ctrl-C stops them all.

The script runs on a fresh PostgreSQL database of the test cluster
(``CLUSTER_DEMO_DATABASE_URL``), so it neither needs root nor touches the
demo role; without ``DICOM_GATEWAY_TEST_POSTGRESQL_URL`` the test fails, as
every PostgreSQL case does (tests/fixtures_db.py).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.interop.conftest import _echo_ok, free_port, is_alive

pytestmark = [pytest.mark.interop, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cluster-demo"


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_cluster_demo_starts_three_nodes_and_ctrl_c_stops_them(
    db_url: str, tmp_path: Path
) -> None:
    ports = [free_port() for _ in range(3)]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DICOM_GATEWAY_")}
    environment.update(CLUSTER_DEMO_PORTS=" ".join(map(str, ports)),
                       CLUSTER_DEMO_DATABASE_URL=db_url)
    demo = subprocess.Popen([str(SCRIPT), str(tmp_path / "demo")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment,
                            start_new_session=True,
                            # a shell cannot trap a signal ignored when it started, and a
                            # pytest-xdist worker ignores SIGINT: give the script Ctrl-C back
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert demo.stdout is not None
        banner = []
        for line in demo.stdout:  # the script prints its banner once every node answers
            banner.append(line)
            if line.startswith("Stop all three"):
                break
        text = "".join(banner)
        assert "three nodes answer C-ECHO" in text, (text, demo.stderr and demo.stderr.read())
        assert all(_echo_ok(port) for port in ports)
        pids = [int(pid) for pid in re.findall(r"pid (\d+)", text)]
        assert len(pids) == 3 and all(is_alive(pid) for pid in pids)
        password = db_url.rpartition("@")[0].rpartition(":")[2]
        assert ":***@" in text and f":{password}@" not in text  # a given URL's password
        for number in (1, 2, 3):
            assert (tmp_path / "demo" / f"node{number}" / "spool").is_dir()
        assert not (tmp_path / "demo" / "shared" / "spool").exists()
        demo.send_signal(signal.SIGINT)  # what Ctrl-C sends the script
        assert demo.wait(60) == 0
        assert not [pid for pid in pids if is_alive(pid)], "a node outlived the script"
        assert not any(_echo_ok(port) for port in ports)
        for number in (1, 2, 3):
            log = (tmp_path / "demo" / f"node{number}" / "serve.log").read_text()
            assert "Traceback" not in log, log[-2000:]
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(10)
        for stream in (demo.stdout, demo.stderr):
            if stream is not None:
                stream.close()
