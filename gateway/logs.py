"""Logging set-up for the command line: ``configure_logging(verbosity)``.

Only the CLI attaches handlers; every other module just does
``logger = logging.getLogger(__name__)``. Records go to stderr as one line
each, ``<time> <LEVEL> <logger>: <message>``, and messages are written as
``key=value`` pairs, so a line reads like::

    2026-03-01T10:15:02+0100 INFO gateway.forwarder: forward study=2.25.91 state=done elapsed=14.2s

pynetdicom is kept at WARNING unless ``-vv``: its debug output is very chatty.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Final

__all__ = ["LEVELS", "configure_logging"]

#: Levels from most to least verbose; verbosity moves along this list.
LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")

#: Our own top-level packages: they log at the chosen level.
_OWN_LOGGERS: Final = ("gateway", "storage", "anonymizer", "config")
#: Libraries whose logs we show, at WARNING (pynetdicom: at the chosen level from -vv).
_LIBRARY_LOGGERS: Final = ("pynetdicom", "apscheduler", "alembic", "sqlalchemy")

_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_DATE_FORMAT: Final = "%Y-%m-%dT%H:%M:%S%z"


class _StderrHandler(logging.Handler):
    """Write to whatever ``sys.stderr`` is at the time of each record.

    Looking the stream up per record (as :data:`logging.lastResort` does)
    keeps working when ``sys.stderr`` is swapped, for example by a test
    runner capturing output.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


def configure_logging(verbosity: int, base_level: str = "WARNING") -> None:
    """Send log records to stderr at a level chosen by ``-v``/``-q``.

    Parameters
    ----------
    verbosity : int
        ``-1`` for ``-q``, ``0`` by default, ``1`` for ``-v``, ``2`` or more
        for ``-vv``. Each step moves one level along :data:`LEVELS` from
        ``base_level``. From 2 up, pynetdicom logs at the same level as we
        do; below that it stays at WARNING.
    base_level : str
        The level at verbosity 0: ``"WARNING"`` for one-shot commands, the
        configured ``logging.level`` for ``serve``.

    Notes
    -----
    Handlers are attached to the project's and the libraries' top-level
    loggers, not to the root logger, and those loggers still propagate: a
    root handler someone else installed (a test's log capture) keeps
    receiving records.
    """
    start = LEVELS.index(base_level.upper()) if base_level.upper() in LEVELS else 2
    level = LEVELS[max(0, min(len(LEVELS) - 1, start - verbosity))]
    library_level = level if verbosity >= 2 else "WARNING"
    loggers: dict[str, dict[str, object]] = {
        name: {"level": level, "handlers": ["stderr"], "propagate": True}
        for name in _OWN_LOGGERS
    }
    for name in _LIBRARY_LOGGERS:
        chosen = library_level if name == "pynetdicom" else "WARNING"
        loggers[name] = {"level": chosen, "handlers": ["stderr"], "propagate": True}
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"line": {"format": _FORMAT, "datefmt": _DATE_FORMAT}},
            "handlers": {"stderr": {"()": _StderrHandler, "formatter": "line"}},
            "loggers": loggers,
        }
    )
