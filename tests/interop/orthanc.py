"""Orthanc (Debian's ``orthanc`` package) as a subprocess on loopback, driven by its REST API.

Orthanc is a sender, a query client and a forwarding destination in the
interop tests. :func:`start_orthanc` writes a configuration into a private
folder (storage and index there, REST and DICOM on free loopback ports, no
remote access, no authentication, the given modalities), starts it and waits
until its REST API answers. Only loopback URLs are ever opened.

Orthanc keeps one copy per SOP Instance UID and logs no change when the same
instance arrives again, so its REST API cannot show a repeat. With
``count_received`` a Lua ``ReceivedInstanceFilter`` (called for every
received instance, before the duplicate check) logs each one, and
:meth:`Orthanc.received` counts them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections import Counter
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from tests.conftest import require_tool

ORTHANC_AE_TITLE = "ORTHANC"

#: Logs the SOP Instance UID of every instance received, repeats included.
RECEIVED_FILTER = """\
function ReceivedInstanceFilter(dicom, origin, info)
  print("received sop=" .. dicom.SOPInstanceUID)
  return true
end
"""
_RECEIVED = re.compile(r"Lua says: received sop=([0-9.]+)")


@dataclass
class Orthanc:
    """A running Orthanc: its ports, its folder, and a small REST client."""

    http_port: int
    dicom_port: int
    root: Path
    process: subprocess.Popen[bytes]
    log: Path
    log_file: IO[bytes]
    ae_title: str = ORTHANC_AE_TITLE
    modalities: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json", timeout: float = 120.0) -> Any:
        """One REST call; the decoded JSON answer (or the raw bytes when not JSON)."""
        request = urllib.request.Request(f"{self.url}{path}", data=body, method=method,
                                         headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=timeout) as response:  # loopback only
            data = response.read()
        try:
            return json.loads(data)
        except ValueError:
            return data

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post_json(self, path: str, value: Any, timeout: float = 300.0) -> Any:
        return self.request("POST", path, json.dumps(value).encode(), timeout=timeout)

    def upload(self, path: Path) -> dict[str, Any]:
        """POST /instances with a DICOM file; Orthanc's answer (ID, ParentStudy, Status)."""
        answer = self.request("POST", "/instances", path.read_bytes(), "application/dicom")
        assert isinstance(answer, dict), answer
        return answer

    def received(self) -> Counter[str]:
        """How often each SOP Instance UID arrived (started with ``count_received``)."""
        return Counter(_RECEIVED.findall(self.log.read_text(errors="replace")))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log_file.close()


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/system", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_orthanc(root: Path, http_port: int, dicom_port: int,
                  modalities: dict[str, list[Any]] | None = None,
                  ae_title: str = ORTHANC_AE_TITLE, count_received: bool = False) -> Orthanc:
    """Start Orthanc with its own folder and ports; fail (never skip) when it is missing.

    Parameters
    ----------
    modalities : dict
        Orthanc's ``DicomModalities``: ``{"gateway": ["GATEWAY", "127.0.0.1", port]}``.
    count_received : bool
        Log every received instance for :meth:`Orthanc.received`.
    """
    program = require_tool("Orthanc", "orthanc")
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "interop",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": ae_title,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomModalities": modalities or {},
        "Plugins": [],
        "StableAge": 1,
        "DicomScpTimeout": 30,
    }
    if count_received:
        script = root / "received.lua"
        script.write_text(RECEIVED_FILTER)
        config["LuaScripts"] = [str(script)]
    config_path = root / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log = root / "orthanc.log"
    log_file = log.open("wb")
    environment = {**os.environ, "TCP_NODELAY": "1"}
    process = subprocess.Popen([program, str(config_path)], stdout=log_file,
                               stderr=subprocess.STDOUT, cwd=root, env=environment)
    orthanc = Orthanc(http_port, dicom_port, root, process, log, log_file, ae_title,
                      dict(modalities or {}))
    deadline = time.monotonic() + 60
    while not _up(orthanc.url):
        if process.poll() is not None:
            log_file.close()
            pytest.fail(f"Orthanc exited with {process.returncode}: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            orthanc.stop()
            pytest.fail(f"Orthanc's REST API did not answer within 60 s: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    return orthanc
