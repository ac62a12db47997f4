"""``AppContext``: what the root command hands every subcommand, built lazily.

The root group stores one ``AppContext`` in ``ctx.obj``; commands receive it
with ``@pass_app``. Nothing is loaded when it is made: the configuration is
read on the first access to :attr:`AppContext.settings`, so ``--help`` never
reads a file, the environment or the database.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import click

from config import Settings, load_config

__all__ = ["AppContext", "pass_app"]


class AppContext:
    """The CLI's shared state: options from the root group, settings on demand.

    Parameters
    ----------
    config_path : pathlib.Path | None
        ``--config`` (or ``DICOM_GATEWAY_CONFIG``), if given.
    verbosity : int
        ``-1`` for ``-q``, otherwise the number of ``-v``.
    overrides : dict[str, object] | None
        Values from command flags keyed ``"section.key"``, highest
        precedence; subcommands add to it before the first access to
        ``settings`` (use :class:`config.Override` to name the flag).
    environ : Mapping[str, str] | None
        The environment to load from; ``None`` means ``os.environ`` at the
        time of loading.
    """

    def __init__(
        self,
        config_path: Path | None = None,
        verbosity: int = 0,
        overrides: dict[str, object] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config_path = config_path
        self.verbosity = verbosity
        self.overrides: dict[str, object] = dict(overrides or {})
        self._environ = environ
        self._settings: Settings | None = None

    @property
    def environ(self) -> Mapping[str, str]:
        """The environment commands read (for example the secret's variable).

        The one passed in, else ``os.environ`` as it is at the time of access.
        """
        return self._environ if self._environ is not None else os.environ

    @property
    def settings(self) -> Settings:
        """The validated settings, loaded on first access.

        Raises
        ------
        config.ConfigError
            When the configuration is invalid (every problem at once).
        """
        if self._settings is None:
            self._settings = load_config(self.config_path, self.environ, self.overrides)
        return self._settings


#: Decorator passing the nearest :class:`AppContext` as the first argument.
pass_app = click.make_pass_decorator(AppContext)
