"""The offline de-identification of files, folders and DICOM media (the `anonymize` command's core).

A clinic or a patient brings records on a CD, DVD or USB stick (PS3.10 media
with a DICOMDIR, PS3.11 application profiles) or as a plain folder. Every
DICOM file under the input is de-identified into the output folder; the
DICOMDIR itself is never copied (its records repeat the patient's identity),
and a file that is not DICOM is skipped and counted.

Output names are made here, from the replaced UIDs
(``<study>/<series>/<instance>.dcm``), never from input names or from a
value in the input. Each file is written to a temporary name in its final
folder and renamed (POSIX rename is atomic), so an interrupted run leaves
only complete files, and the run flushes everything to disk before it
reports; a temporary file from an
interrupted run is removed when the next run meets it. Instances that need a
person's review (burned-in annotation, encapsulated documents) are not
written to the output; a review folder can be named to receive them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import dcmwrite
from pydicom.tag import BaseTag

from .deidentify import Result, anonymize
from .errors import AnonymizationError
from .profile import Profile
from .pseudonyms import PseudonymLookup

__all__ = ["BatchReport", "FileReport", "Outcome", "deidentify_file", "find_inputs", "run"]

_MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"
_MEDIA_STORAGE_SOP_CLASS = BaseTag(0x00020002)
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL
_TMP_PREFIX = ".partial-"
#: temporary names: process id and a counter, unique within the output folder
_SERIAL = itertools.count()


class Outcome(str, Enum):
    """What happened to one input file."""

    DEIDENTIFIED = "deidentified"
    NEEDS_REVIEW = "needs_review"
    FAILED = "failed"
    NOT_DICOM = "not_dicom"
    MEDIA_DIRECTORY = "media_directory"


@dataclass(frozen=True)
class FileReport:
    """One input file's outcome; ``reason`` never holds a value from the file."""

    source: Path
    outcome: Outcome
    reason: str = ""
    output: Path | None = None


@dataclass
class BatchReport:
    """Counts and the files that need attention."""

    counts: Counter[Outcome] = field(default_factory=Counter)
    attention: list[FileReport] = field(default_factory=list)

    def add(self, report: FileReport) -> None:
        self.counts[report.outcome] += 1
        if report.outcome in (Outcome.FAILED, Outcome.NEEDS_REVIEW):
            self.attention.append(report)

    @property
    def files(self) -> int:
        return sum(self.counts.values())

    @property
    def ok(self) -> bool:
        """True when nothing failed and at least one DICOM instance was handled."""
        handled = self.counts[Outcome.DEIDENTIFIED] + self.counts[Outcome.NEEDS_REVIEW]
        return self.counts[Outcome.FAILED] == 0 and handled > 0


def find_inputs(path: Path, recursive: bool, errors: list[FileReport]) -> list[Path]:
    """The files under ``path`` in a stable order.

    A folder that cannot be read is recorded in ``errors`` as a failure and
    the walk goes on; temporary files of an interrupted run are skipped.
    """
    if not path.is_dir():
        return [path]
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as exc:
        errors.append(FileReport(path, Outcome.FAILED, f"folder cannot be read ({_errno(exc)})"))
        return []
    found: list[Path] = []
    for entry in entries:
        if entry.name.startswith(_TMP_PREFIX):
            continue
        if entry.is_dir(follow_symlinks=False):
            if recursive:
                found += find_inputs(Path(entry.path), recursive, errors)
        elif entry.is_file(follow_symlinks=False):
            found.append(Path(entry.path))
    return found


def _errno(exc: OSError) -> str:
    return exc.strerror.lower() if exc.strerror else type(exc).__name__


def _fail_reason(exc: BaseException, profile: Profile) -> str:
    if isinstance(exc, AnonymizationError):
        return str(exc)
    if isinstance(exc, RecursionError):  # pydicom reads undefined-length sequences recursively
        return f"sequence nesting deeper than {profile.max_sequence_depth}"
    if isinstance(exc, EOFError):
        return "truncated: the file ends inside an element"
    if isinstance(exc, OSError):
        return f"cannot be read or written ({_errno(exc)})"
    return f"malformed DICOM ({type(exc).__name__})"


def _output_path(root: Path, result: Result) -> Path:
    # replaced UIDs: digits and dots made by the engine, never a value from the input
    return root.joinpath(
        result.study_instance_uid or "no-study",
        result.series_instance_uid or "no-series",
        f"{result.sop_instance_uid}.dcm",
    )


def _create(tmp_name: str, folder: str) -> int:
    """Open a new temporary file in ``folder``, making the folder when it is new."""
    try:
        return os.open(tmp_name, _NEW_FILE, 0o644)
    except FileNotFoundError:  # the first file of its study or series
        os.makedirs(folder, exist_ok=True)
    except FileExistsError:  # left by an interrupted run that had our process id
        os.unlink(tmp_name)
    return os.open(tmp_name, _NEW_FILE, 0o644)


def write_atomically(result: Result, target: Path, *, durable: bool = True) -> None:
    """Write the result to ``target`` through a temporary name and a rename.

    With ``durable`` the file and its folder are fsync'd before this returns;
    a batch passes False and syncs once at its end instead (see :func:`run`).
    """
    folder = str(target.parent)
    tmp_name = os.path.join(folder, f"{_TMP_PREFIX}{os.getpid()}-{next(_SERIAL)}")
    fd = _create(tmp_name, folder)
    try:
        with open(fd, "wb") as fh:
            dcmwrite(fh, result.dataset, enforce_file_format=True)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    if durable:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def deidentify_file(
    source: Path,
    out_root: Path,
    profile: Profile,
    lookup: PseudonymLookup,
    review_root: Path | None = None,
    *,
    durable: bool = True,
) -> FileReport:
    """De-identify one file into ``out_root`` (or ``review_root`` when it needs review)."""
    try:
        ds = dcmread(source)
    except InvalidDicomError:
        return FileReport(source, Outcome.NOT_DICOM, "not a DICOM file")
    except Exception as exc:  # noqa: BLE001 (pydicom raises many types on broken input)
        return FileReport(source, Outcome.FAILED, _fail_reason(exc, profile))
    meta = getattr(ds, "file_meta", None)
    media_class = None if meta is None else meta.get(_MEDIA_STORAGE_SOP_CLASS)
    if media_class is not None and str(media_class.value) == _MEDIA_DIRECTORY:
        return FileReport(source, Outcome.MEDIA_DIRECTORY, "DICOMDIR: not copied")
    try:
        result = anonymize(ds, profile, lookup)
        if result.needs_review:
            reason = "; ".join(result.needs_review)
            if review_root is None:
                return FileReport(source, Outcome.NEEDS_REVIEW, reason)
            target = _output_path(review_root, result)
            write_atomically(result, target, durable=durable)
            return FileReport(source, Outcome.NEEDS_REVIEW, reason, target)
        target = _output_path(out_root, result)
        write_atomically(result, target, durable=durable)
    except Exception as exc:  # noqa: BLE001 (one file's failure is reported, not raised)
        return FileReport(source, Outcome.FAILED, _fail_reason(exc, profile))
    return FileReport(source, Outcome.DEIDENTIFIED, output=target)


def run(
    sources: list[Path],
    out_root: Path,
    profile: Profile,
    lookup: PseudonymLookup,
    *,
    review_root: Path | None = None,
    progress: Callable[[FileReport], None] | None = None,
    sync: bool = True,
) -> BatchReport:
    """De-identify every file in ``sources``; one report per file, none raised.

    Files are renamed into place one by one (an interrupted run leaves only
    whole files) and flushed to disk together at the end, before the report
    is returned: one sync instead of one per file (``sync=False`` skips it,
    for measurements only). Should the machine lose power during a run, run
    it again: the output is deterministic.
    """
    report = BatchReport()
    for source in sources:
        file_report = deidentify_file(
            source, out_root, profile, lookup, review_root, durable=False
        )
        report.add(file_report)
        if progress is not None:
            progress(file_report)
    if sync:
        os.sync()
    return report
