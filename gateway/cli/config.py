"""``dicom-gateway config``: validate the configuration and show the effective one.

``config check`` exits 0 and prints ``config ok`` with the sources used, or
prints every problem to stderr and exits 2. ``config show`` prints the
effective settings (secrets redacted) as aligned ``section.key = value``
lines, or with ``--json`` as exactly one JSON document.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import click

from config import ENV_PREFIX, Settings
from gateway.cli._context import AppContext, pass_app
from gateway.cli._exit import translate_errors

__all__ = ["config"]


@click.group()
def config() -> None:
    """Validate and show the configuration."""


@config.command()
@pass_app
@translate_errors
def check(app: AppContext) -> None:
    """Load and validate the configuration; exit 2 listing every problem."""
    settings = app.settings
    rows = [("defaults", "embedded default.toml")]
    if settings.config_file is not None:
        rows.append(("file", str(settings.config_file)))
    else:
        rows.append(("file", "none (use --config or DICOM_GATEWAY_CONFIG)"))
    variables = _sources(settings, lambda source: source.startswith(ENV_PREFIX))
    if variables:
        rows.append(("environment", ", ".join(variables)))
    flags = _sources(settings, lambda source: source.startswith("-"))
    if flags:
        rows.append(("flags", ", ".join(flags)))
    click.echo("config ok")
    width = max(len(label) for label, _ in rows) + 1
    for label, text in rows:
        click.echo(f"{label + ':':<{width}} {text}")


@config.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_app
@translate_errors
def show(app: AppContext, as_json: bool) -> None:
    """Print the effective configuration, secrets redacted.

    Text lines are "section.key = value" with TOML values, followed by
    "# from SOURCE" for a value not taken from the embedded default.
    """
    settings = app.settings
    data = settings.to_dict(redact=True)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    lines = [
        (f"{section}.{key}", json.dumps(value, ensure_ascii=False))
        for section, values in data.items()
        for key, value in values.items()
    ]
    width = max(len(name) for name, _ in lines)
    sources = dict(settings.sources)
    for name, value in lines:
        note = f"  # from {sources[name]}" if name in sources else ""
        click.echo(f"{name:<{width}} = {value}{note}")


def _sources(settings: Settings, wanted: Callable[[str], bool]) -> list[str]:
    found: list[str] = []
    for _, source in settings.sources:
        if wanted(source) and source not in found:
            found.append(source)
    return found
