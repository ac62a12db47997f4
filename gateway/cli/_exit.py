"""Exit codes of ``dicom-gateway``, defined once, and the decorator that maps errors to them.

- ``OK`` = 0: success
- ``FAILED`` = 1: the operation failed (job failed, peer refused)
- ``USAGE`` = 2: usage error or invalid configuration (click's own code for misuse)
- ``NOT_FOUND`` = 3: the named thing does not exist
- ``UNREACHABLE`` = 4: a peer could not be reached

:func:`translate_errors` wraps a command so that a
:class:`~gateway.errors.GatewayError` or a :class:`config.ConfigError`
becomes a readable message on stderr and the matching exit code; the
traceback is printed too only with ``-v``.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from typing import Final, ParamSpec, TypeVar, cast

import click

from config import ConfigError
from gateway.cli._context import AppContext
from gateway.errors import GatewayError

__all__ = [
    "FAILED",
    "NOT_FOUND",
    "OK",
    "UNREACHABLE",
    "USAGE",
    "translate_errors",
]

OK: Final = 0
FAILED: Final = 1
USAGE: Final = 2
NOT_FOUND: Final = 3
UNREACHABLE: Final = 4

P = ParamSpec("P")
R = TypeVar("R")


@functools.cache
def _failure(exit_code: int) -> type[click.ClickException]:
    """A ClickException subclass exiting with ``exit_code`` (click keeps the code per class)."""
    name = f"ExitCode{exit_code}"
    return cast(
        "type[click.ClickException]",
        type(name, (click.ClickException,), {"exit_code": exit_code, "__module__": __name__}),
    )


def translate_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a command raises into a message and an exit code.

    * :class:`~gateway.errors.GatewayError`: ``Error: <message>`` (one line)
      and the error's ``exit_code`` (1-4).
    * :class:`config.ConfigError`: ``Error: invalid configuration (N
      problems):`` followed by every problem line as is, and exit code 2.

    With ``-v`` (verbosity 1 or more) the traceback is printed to stderr
    first. Any other exception is a bug and propagates unchanged.

    Parameters
    ----------
    command : Callable
        A click command callback (apply this decorator below ``@click.command``).

    Returns
    -------
    Callable
        The wrapped callback.
    """

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ConfigError as error:
            _maybe_traceback()
            count = len(error.problems)
            noun = "problem" if count == 1 else "problems"
            lines = [f"invalid configuration ({count} {noun}):", *error.problems]
            raise _failure(USAGE)("\n".join(lines)) from error
        except GatewayError as error:
            _maybe_traceback()
            message = " ".join(str(error).split()) or type(error).__name__
            raise _failure(error.exit_code)(message) from error

    return wrapper


def _maybe_traceback() -> None:
    ctx = click.get_current_context(silent=True)
    app = ctx.find_object(AppContext) if ctx is not None else None
    if app is not None and app.verbosity >= 1:
        click.echo(traceback.format_exc().rstrip(), err=True)
