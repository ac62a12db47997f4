"""A small real file system for disk-full cases (RELIABILITY T27): a tmpfs mounted as root.

``small_tmpfs(folder, megabytes)`` mounts one on ``folder`` for the block and
unmounts it after; ``fill(folder)`` writes a file until the disk refuses
(ENOSPC) and returns what deletes it again.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["can_mount", "fill", "small_tmpfs"]


def can_mount() -> bool:
    """Whether this process may mount a tmpfs (root)."""
    return os.geteuid() == 0


@contextmanager
def small_tmpfs(folder: Path, megabytes: int) -> Iterator[Path]:
    """A tmpfs of ``megabytes`` on ``folder`` (created); unmounted when the block ends.

    Raises ``RuntimeError`` with how to get one when mounting is refused.
    """
    folder.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0700",
                          "tmpfs", str(folder)], capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"cannot mount a tmpfs on {folder} ({run.stderr.strip()}): "
                           "run the tests as root, as scripts/test does in CI")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)
        if os.path.ismount(folder):
            subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Callable[[], None]:
    """Write ``folder/filler`` until the file system is full; the returned call frees it."""
    filler = folder / "filler"
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return lambda: filler.unlink()
