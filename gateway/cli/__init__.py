"""The ``dicom-gateway`` command line: the root group and its command groups.

``main`` parses the options every command shares (``--config``, ``-v``,
``-q``), sets up logging, and puts a lazy :class:`AppContext` in ``ctx.obj``;
subcommands take it with ``@pass_app``. Nothing here loads the
configuration, so ``--help`` works even when the config file is broken.

Command groups live one per module in this package and are registered from
``_COMMANDS`` at the bottom of this file.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from config import CONFIG_ENV
from gateway.cli._context import AppContext, pass_app
from gateway.logs import configure_logging

__all__ = ["AppContext", "main", "pass_app"]


@click.group(name="dicom-gateway", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    envvar=CONFIG_ENV,
    show_envvar=True,
    help="TOML config file; its keys override the embedded defaults.",
)
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="More log output on stderr, and tracebacks on errors; -vv adds pynetdicom's.",
)
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.version_option(package_name="dicom-gateway", prog_name="dicom-gateway")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, verbose: int, quiet: bool) -> None:
    """A DICOM node for second-opinion work: receive, de-identify, index, serve, forward.

    Settings come from the embedded defaults, then the --config file, then
    DICOM_GATEWAY_<SECTION>__<KEY> environment variables, then command flags.
    """
    if verbose and quiet:
        raise click.UsageError("-v and -q cannot be used together.")
    verbosity = -1 if quiet else verbose
    configure_logging(verbosity)
    ctx.obj = AppContext(config_path=config_path, verbosity=verbosity)


# ---------------------------------------------------------------------------
# Command groups. One "module:attribute" string per group, one group per
# module in gateway/cli/, kept in alphabetical order; adding a group is adding
# its line here and nothing else.
# ---------------------------------------------------------------------------
_COMMANDS: list[str] = [
    "gateway.cli.anonymize:anonymize",
    "gateway.cli.audit:audit_group",
    "gateway.cli.case:case",
    "gateway.cli.config:config",
    "gateway.cli.db:db",
    "gateway.cli.import_:import_",
    "gateway.cli.ingest:ingest",
    "gateway.cli.peer:peer",
    "gateway.cli.queue:queue",
    "gateway.cli.route:route",
    "gateway.cli.serve:serve",
    "gateway.cli.status:status",
    "gateway.cli.study:study",
]


def _register(commands: list[str]) -> None:
    for spec in commands:
        module_name, _, attribute = spec.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{spec} is not a click command")
        main.add_command(command)


_register(_COMMANDS)
