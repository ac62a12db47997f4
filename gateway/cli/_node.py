"""The node's parts for one command: built once, on first use, closed at exit.

``node_app(app)`` builds :class:`gateway.app.App` from the command's
settings and environment the first time a command asks, keeps it on the
click context, and disposes of it when the command ends. Storage errors
raised while building (a database that cannot be opened, a bad URL) are
turned into :class:`gateway.errors.GatewayError` so that they exit with one
line, like every other failure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import click

from gateway.app import App, build_app
from gateway.cli._context import AppContext
from gateway.errors import GatewayError
from storage.errors import StorageError

__all__ = ["node_app", "print_table", "storage_failure"]

_KEY = "gateway.cli.node_app"


def node_app(ctx_app: AppContext) -> App:
    """The :class:`App` for the running command, built on first call.

    Parameters
    ----------
    ctx_app : AppContext
        The command's context (settings and environment).

    Returns
    -------
    App
        Closed automatically when the command's click context ends.

    Raises
    ------
    config.ConfigError
        When the configuration is invalid.
    gateway.errors.GatewayError
        When the secret, the data folder or the database cannot be opened.
    """
    ctx = click.get_current_context()
    root = ctx.find_root()
    built = root.meta.get(_KEY)
    if isinstance(built, App):
        return built
    settings = ctx_app.settings
    try:
        app = build_app(settings, ctx_app.environ)
    except StorageError as exc:
        raise storage_failure(exc) from exc
    except OSError as exc:
        raise GatewayError(
            f"storage.data_dir: cannot open {settings.storage.data_dir} "
            f"({exc.__class__.__name__})"
        ) from exc
    root.meta[_KEY] = app
    root.call_on_close(lambda: _close(root))
    return app


def storage_failure(exc: StorageError) -> GatewayError:
    """A storage error as the CLI reports it: one line, exit code 1."""
    return GatewayError(" ".join(str(exc).split()) or type(exc).__name__)


def _close(root: click.Context) -> None:
    app = root.meta.pop(_KEY, None)
    if isinstance(app, App):
        app.close()


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` under ``header`` on stdout, each column padded to its widest cell."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def print_record(data: Mapping[str, object]) -> None:
    """Print ``key: value`` lines, keys padded to the longest; empty values as ``-``."""
    width = max(len(key) for key in data) + 1
    for key, value in data.items():
        shown = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
        click.echo(f"{key + ':':<{width}} {'-' if shown in (None, '') else shown}")
