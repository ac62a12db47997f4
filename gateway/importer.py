"""Importing records from media (CD, DVD, USB stick, any folder) through the spool.

A patient or a clinic brings records on a disc; they must go through exactly
what a C-STORE goes through (ARCHITECTURE, data flow), never a second code
path. For each file under the path (recursively, in a stable order):

1. a file without the DICOM preamble and ``DICM`` prefix is counted as not
   DICOM; the DICOMDIR itself (Media Storage Directory, SOP class
   ``1.2.840.10008.1.3.10``) is skipped, since its records repeat the
   patient's identity and it is not an instance;
2. the header is checked with :func:`gateway.receive.check_received`, the
   expected UIDs being the file's own, so a broken, truncated or malformed
   file is reported with the rule it breaks and never spooled;
3. a copy of the bytes is accepted into the spool (temporary name, fsync,
   rename: the source is never moved or changed), its 128-byte preamble
   written as zeros: PS3.10 7.1 leaves the preamble to applications, and a
   file whose preamble holds an executable header (``MZ``, ``\x7fELF``: a
   polyglot, CVE-2019-11687) is counted and logged as sanitised, so that no
   copy of those bytes stays in the spool or the quarantine; with a
   :class:`~storage.spool.SpoolMeta` naming ``IMPORT`` or the peer's AE
   title as the caller;
4. every few files, :func:`gateway.ingest.run_once` processes the entries
   this import spooled (and only those), so the counts are this import's:
   imported, already present (the same bytes were indexed before),
   quarantined (with the reason, see ``dicom-gateway study quarantine``).

Entries that this run did not process (a running node's workers took them,
or the database failed and ingest backed off) stay in the spool and are
counted as queued; the node or ``ingest run --once`` finishes them.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.misc import is_dicom

from storage.errors import StorageFull
from storage.spool import SpoolMeta

from .app import App
from .ingest import IngestReport, run_once
from .receive import check_received

__all__ = ["IMPORT_AE_TITLE", "ImportReport", "Refusal", "find_files", "import_files",
           "import_meta"]

logger = logging.getLogger(__name__)

#: the calling AE title recorded for an import that names no peer
IMPORT_AE_TITLE = "IMPORT"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
#: how many spooled files are ingested at a time (bounds the spool's growth)
BATCH = 32
_MB = 1024 * 1024


@dataclass(frozen=True)
class Refusal:
    """A file that was not spooled, and the rule it broke (no PHI)."""

    path: Path
    reason: str


@dataclass
class ImportReport:
    """What one import did, file by file, in counts."""

    files: int = 0
    imported: int = 0
    already_present: int = 0
    quarantined: int = 0
    not_dicom: int = 0
    media_directory: int = 0
    preamble_replaced: int = 0
    queued: int = 0
    refused: list[Refusal] = field(default_factory=list)

    def add_ingest(self, spooled: int, report: IngestReport) -> None:
        self.imported += report.stored
        self.already_present += report.already_present
        self.quarantined += report.quarantined
        self.queued += spooled - (report.stored + report.already_present + report.quarantined)

    @property
    def ok(self) -> bool:
        """Nothing refused or left behind, and at least one instance handled."""
        handled = self.imported + self.already_present + self.quarantined
        return not self.refused and self.queued == 0 and handled > 0


def find_files(path: Path) -> list[Path]:
    """Every regular file under ``path`` (or ``path`` itself), sorted, symlinks not followed."""
    if not path.is_dir():
        return [path]
    found: list[Path] = []
    for folder, dirs, names in os.walk(path):
        dirs.sort()
        found += [Path(folder) / name for name in sorted(names)
                  if (Path(folder) / name).is_file() and not (Path(folder) / name).is_symlink()]
    return found


def import_meta(app: App, calling_ae_title: str | None = None,
                source_peer: str | None = None) -> SpoolMeta:
    """The spool metadata of an import: who it is recorded as coming from, and when."""
    return SpoolMeta(
        calling_ae_title=calling_ae_title or IMPORT_AE_TITLE,
        called_ae_title=app.settings.node.ae_title,
        source_peer=source_peer,
        received_at=datetime.now(timezone.utc),
        peer_address="",
    )


def _own_uids(path: Path) -> tuple[str, str] | None:
    """The file's SOP Class and Instance UIDs; None for the DICOMDIR."""
    try:
        header = dcmread(path, stop_before_pixels=True,
                         specific_tags=["SOPClassUID", "SOPInstanceUID"])
    except Exception:  # pydicom raises many types on broken input; check_received reports it
        return "", ""
    media_class = str(header.file_meta.get("MediaStorageSOPClassUID", ""))
    if media_class == MEDIA_STORAGE_DIRECTORY:
        return None
    return str(header.get("SOPClassUID", "")), str(header.get("SOPInstanceUID", ""))


_PREAMBLE = 128


def _preamble_is_zero(path: Path) -> bool:
    with path.open("rb") as source:
        return source.read(_PREAMBLE) == bytes(_PREAMBLE)


def _copier(path: Path) -> Callable[[BinaryIO], None]:
    """Copy ``path`` with a zero preamble (PS3.10 7.1), the rest byte for byte."""
    def write(handle: BinaryIO) -> None:
        with path.open("rb") as source:
            source.seek(_PREAMBLE)
            handle.write(bytes(_PREAMBLE))
            shutil.copyfileobj(source, handle, 1 << 20)

    return write


def import_files(app: App, files: Iterator[Path] | list[Path], meta: SpoolMeta) -> ImportReport:
    """Check, spool and ingest ``files`` (see the module docstring); never raises per file."""
    report = ImportReport()
    max_bytes = app.settings.limits.max_dataset_mb * _MB
    batch: set[str] = set()

    def drain() -> None:
        if batch:
            report.add_ingest(len(batch), run_once(app, only=frozenset(batch)))
            batch.clear()

    for path in files:
        report.files += 1
        try:
            dicom = is_dicom(path)
        except OSError as exc:
            report.refused.append(Refusal(path, f"cannot be read ({exc.strerror})"))
            continue
        if not dicom:
            report.not_dicom += 1
            continue
        uids = _own_uids(path)
        if uids is None:
            report.media_directory += 1
            continue
        verdict = check_received(path, uids[0], uids[1], max_bytes,
                                 app.settings.anonymizer.max_sequence_depth)
        if verdict is not None:
            report.refused.append(Refusal(path, verdict.comment))
            continue
        if not _preamble_is_zero(path):
            report.preamble_replaced += 1
            logger.warning("import file_number=%d preamble=non-zero action=replaced-with-zeros",
                           report.files)
        try:
            entry = app.spool.accept_bytes(_copier(path), meta)
        except StorageFull:
            report.refused.append(Refusal(path, "out of disk space in the spool"))
            continue
        except OSError as exc:
            report.refused.append(Refusal(path, f"cannot be spooled ({exc.strerror})"))
            continue
        batch.add(entry.name)
        if len(batch) >= BATCH:
            drain()
    drain()
    logger.info("import files=%d imported=%d already_present=%d quarantined=%d not_dicom=%d "
                "refused=%d queued=%d preamble_replaced=%d", report.files, report.imported,
                report.already_present, report.quarantined, report.not_dicom,
                len(report.refused), report.queued, report.preamble_replaced)
    return report
