"""Character-set abuse and injection text through the running node (RELIABILITY T20).

Values go in Study Description and Series Description (LO) and Body Part
Examined (CS), which the profile keeps and the index holds (patient
attributes are replaced by pseudonyms, so they cannot carry text through):
SQL (``'; DROP TABLE``), shell (``$(...)``, backquotes), a newline followed
by a forged log line, ANSI escapes; under ISO_IR 192 with invalid UTF-8,
ISO 2022 IR 87 with its escape sequences, and GBK. Each instance is stored
(0x0000), its index row holds the exact text pydicom decodes from the
stored file (bound parameters: nothing is interpreted), a C-FIND for the
text finds the study, the log file holds no raw newline or ESC from a
value, and the process's resources come back to their baseline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind as STUDY_ROOT,
)
from sqlalchemy import func, select

from storage.db import session_scope
from storage.models import Instance, PeerScope, QuarantineEntry, Series, Study
from tests.conftest import wait_until
from tests.craft import element, encode, one_ct, store
from tests.procwatch import watched
from tests.query_index import add_peer

CHARSET = 0x00080005
STUDY_DESCRIPTION = 0x00081030
SERIES_DESCRIPTION = 0x0008103E
BODY_PART = 0x00180015
FORGED = "\nINFO gateway.handlers store sop=1.2.3 status=0x0000"

#: (specific character set, study description bytes, series description bytes)
CASES: dict[str, tuple[bytes, bytes, bytes]] = {
    "sql": (b"ISO_IR 192", b"'; DROP TABLE study; --", b"x' OR '1'='1"),
    "shell": (b"ISO_IR 192", b"$(touch /tmp/pwned) `id`", b"a; rm -rf / #"),
    "log injection": (b"ISO_IR 192", b"CHEST" + FORGED.encode(), b"\x1b[31mRED\x1b[0m\x1b]0;t\x07"),
    "invalid utf-8": (b"ISO_IR 192", b"BAD \xff\xfe\xc3( END", b"\xed\xa0\x80 surrogate"),
    "iso 2022": (b"\\ISO 2022 IR 87", b"\x1b$B;3ED\x1b(B CT", b"\x1b$B%^%k%A\x1b(B"),
    "gbk": (b"GBK", "胸部 CT".encode("gbk"), "增强扫描".encode("gbk")),
}


@pytest.fixture
def node(make_node: Callable[..., Any]) -> Any:
    started = make_node()
    add_peer(started.app.engine, "specialist", "SPECIALIST", ("query",), PeerScope.ALL)
    return started


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """The node's log lines as a file handler writes them (what an operator reads)."""
    path = tmp_path / "gateway.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


def _pad(value: bytes) -> bytes:
    return value + b" " * (len(value) % 2)


def _find(port: int, study_description: str) -> list[Dataset]:
    ae = AE(ae_title="SPECIALIST")
    ae.add_requested_context(STUDY_ROOT)
    assoc = ae.associate("127.0.0.1", port, ae_title="GATEWAY")
    assert assoc.is_established
    query = Dataset()
    query.SpecificCharacterSet = "ISO_IR 192"
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.StudyDescription = study_description
    try:
        return [found for status, found in assoc.send_c_find(query, STUDY_ROOT)
                if status is not None and status.Status in (0xFF00, 0xFF01)
                and found is not None]
    finally:
        assoc.release()


#: pydicom's lenient reading (its default, WARN): undecodable text gets replacement
#: characters, an unknown escape sequence the first encoding, with a warning logged
LENIENT = pytest.mark.filterwarnings(
    "ignore:Failed to decode byte string:UserWarning",
    "ignore:Found unknown escape sequence:UserWarning")


@LENIENT
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_text_is_stored_exactly_found_and_never_logged_raw(
        node: Any, tmp_path: Path, log_file: Path, case: str) -> None:
    charset, study_text, series_text = CASES[case]
    ds = one_ct(tmp_path / "ct", seed=40)
    data = encode(ds, {
        CHARSET: element(CHARSET, "CS", _pad(charset)),
        STUDY_DESCRIPTION: element(STUDY_DESCRIPTION, "LO", _pad(study_text)),
        SERIES_DESCRIPTION: element(SERIES_DESCRIPTION, "LO", _pad(series_text)),
        BODY_PART: element(BODY_PART, "CS", b"CHEST; DROP "),
    })
    with watched(node):
        assert store(node.port, ds, data) == 0x0000
        wait_until(lambda: _count(node) == 1, what="the instance indexed")
    stored = dcmread(next((node.app.data_dir / "store").rglob("*.dcm")))
    with session_scope(node.app.engine) as session:
        row = session.execute(
            select(Study.study_description, Series.series_description,
                   Series.body_part_examined)
            .join(Series, Series.study_fk == Study.id)).one()
    # the index holds what the stored file says, character for character
    assert tuple(row) == (str(stored.get("StudyDescription", "")),
                          str(stored.get("SeriesDescription", "")),
                          str(stored.get("BodyPartExamined", "")))
    assert row.body_part_examined == "CHEST; DROP"
    if case in ("sql", "shell", "log injection"):
        assert row.study_description == study_text.decode().rstrip(" ")
    if row.study_description:
        found = _find(node.port, row.study_description.replace("*", "?"))
        assert [str(f.StudyInstanceUID) for f in found] == [str(stored.StudyInstanceUID)]
    with session_scope(node.app.engine) as session:  # the tables are all still there
        assert session.scalar(select(func.count()).select_from(Study)) == 1
    text = log_file.read_text(encoding="utf-8")
    assert "\x1b" not in text
    assert not [line for line in text.splitlines()
                if line.startswith("INFO gateway.handlers store sop=1.2.3")]
    assert not Path("/tmp/pwned").exists()


def test_undecodable_text_under_strict_reading_is_quarantined_not_retried_forever(
        node: Any, tmp_path: Path) -> None:
    """pytest turns pydicom's decoding warning into an error (strict reading): the
    instance is set aside with the reason, and the worker goes on to the next one."""
    ds = one_ct(tmp_path / "ct", seed=41)
    data = encode(ds, {CHARSET: element(CHARSET, "CS", b"ISO_IR 192"),
                       STUDY_DESCRIPTION: element(STUDY_DESCRIPTION, "LO", b"BAD \xff\xfe ")})
    with watched(node):
        assert store(node.port, ds, data) == 0x0000
        wait_until(lambda: _quarantined(node) == ["cannot be indexed (UserWarning)"],
                   what="the instance quarantined with its reason")
        good = one_ct(tmp_path / "next", seed=42)
        assert store(node.port, good, encode(good)) == 0x0000
        wait_until(lambda: _count(node) == 1, what="the next instance indexed")
    assert not list((node.app.data_dir / "store").rglob("*.dcm"))[1:], "one stored file only"


def _quarantined(node: Any) -> list[str]:
    with session_scope(node.app.engine) as session:
        return list(session.scalars(select(QuarantineEntry.reason)))


def _count(node: Any) -> int:
    with session_scope(node.app.engine) as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)
