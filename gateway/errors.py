"""The ``GatewayError`` family: failures the command line reports as one line.

Each class carries the process exit code the CLI uses for it (the table in
``gateway/cli/_exit.py``):

=====================  ====  =============================================
class                  code  meaning
=====================  ====  =============================================
``GatewayError``       1     the operation failed (a job failed, a peer
                             refused)
``UsageError``         2     the command was misused (invalid configuration
                             is reported with the same code)
``NotFoundError``      3     the named thing (peer, route, study, job) does
                             not exist
``PeerUnreachable``    4     a remote AE could not be reached
=====================  ====  =============================================

A message names what failed and what was expected; it never holds PHI.
"""

from __future__ import annotations

__all__ = ["GatewayError", "NotFoundError", "PeerUnreachable", "UsageError"]


class GatewayError(Exception):
    """An operation failed; the CLI exits with code 1."""

    exit_code: int = 1


class UsageError(GatewayError):
    """The command was used wrongly (bad argument combination); exit code 2."""

    exit_code = 2


class NotFoundError(GatewayError):
    """The peer, route, study or job named does not exist; exit code 3."""

    exit_code = 3


class PeerUnreachable(GatewayError):
    """A remote AE did not answer (no route, refused, timed out); exit code 4."""

    exit_code = 4
