"""Shared fixtures: strict pydicom, the de-identification secret, corpora, tools.

Factories yield what a test needs and clean up after themselves; tools nobody
here wrote (DCMTK, dicom3tools) are found or the test fails saying how to get
them, never skips.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom.config
import pytest
from click.testing import CliRunner, Result

from tests.corpus import Corpus, make_planted_corpus, make_valid_study

if TYPE_CHECKING:
    import socket

    from config import Settings
    from gateway.node import Node

#: database fixtures (SQLite and PostgreSQL) live in their own module
pytest_plugins = ["tests.fixtures_db"]

#: a fixed secret so that test outputs are reproducible
TEST_KEY_HEX = "5eed" * 16


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what the imports and the collection made (modules, dictionaries, test items):
    the collections that follow (tests.fixtures_db, after each PostgreSQL test) then scan
    only what the tests made, not 100,000 objects that live as long as the run."""
    gc.freeze()


@pytest.fixture(autouse=True)
def strict_pydicom() -> Iterator[None]:
    """Writing invalid values raises (pydicom's default only warns)."""
    settings = pydicom.config.settings
    before = settings.writing_validation_mode
    settings.writing_validation_mode = pydicom.config.RAISE
    yield
    settings.writing_validation_mode = before


@pytest.fixture(autouse=True)
def restore_loggers() -> Iterator[None]:
    """The CLI configures logging; put the loggers back so caplog keeps working."""
    names = ["", "gateway", "storage", "anonymizer", "config", "pynetdicom"]
    saved = {
        name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers),
               logging.getLogger(name).propagate)
        for name in names
    }
    yield
    for name, (level, handlers, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate


@pytest.fixture
def gateway_env(tmp_path: Path) -> dict[str, str]:
    """Environment for CLI runs: the test secret and a private data folder."""
    return {
        "DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX,
        "DICOM_GATEWAY_STORAGE__DATA_DIR": str(tmp_path / "var"),
    }


@pytest.fixture(scope="session")
def planted_corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """Objects with PHI planted in every Table E.1-1 attribute they can carry."""
    return make_planted_corpus(tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="session")
def valid_study(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """IOD-valid objects of two patients (three studies) with realistic fake PHI."""
    return make_valid_study(tmp_path_factory.mktemp("valid"))


def require_tool(name: str, package: str) -> str:
    """The path of a program, or a failure naming the Debian package that has it."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        pytest.fail(f"{name} not found: install Debian package {package} (scripts/test does this)")
    return found


@pytest.fixture
def collector() -> Iterator["socket.socket"]:
    """A UDP syslog collector on loopback (``audit.syslog = udp://127.0.0.1:PORT``)."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    yield sock
    sock.close()


@pytest.fixture
def cli(gateway_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> Callable[..., Result]:
    """Invoke ``dicom-gateway`` in-process with a clean environment and the test secret."""
    from gateway.cli import main

    monkeypatch.chdir(tmp_path)

    def invoke(*args: str, **env: str) -> Result:
        environment: dict[str, str | None] = {
            name: None for name in os.environ if name.startswith("DICOM_GATEWAY_")
        }
        environment.update(gateway_env)
        environment.update(env)
        return CliRunner().invoke(main, list(args), env=environment, catch_exceptions=False)

    return invoke


# -- a running node --------------------------------------------------------

def node_settings(tmp_path: Path, db_url: str, **overrides: object) -> "Settings":
    """Settings for a test node: its own data folder and database, a free loopback port."""
    import dataclasses

    from config import load_config

    values: dict[str, object] = {"storage.data_dir": str(tmp_path / "var"), "database.url": db_url,
                                 "ingest.workers": 1}
    values.update(overrides)
    settings = load_config(None, {"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX}, values)
    return dataclasses.replace(settings, listener=dataclasses.replace(settings.listener, port=0))


@pytest.fixture
def make_node(tmp_path: Path, db_url: str) -> Iterator[Callable[..., "Node"]]:
    """Start nodes in this process on free loopback ports; stop them afterwards."""
    from gateway.app import build_app
    from gateway.node import Node

    started: list[Node] = []

    def start(**overrides: object) -> Node:
        settings = node_settings(tmp_path / f"node{len(started)}", db_url, **overrides)
        node = Node(build_app(settings, {"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX}))
        node.start()
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()
        node.app.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds (never sleep blindly)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what or predicate}")
