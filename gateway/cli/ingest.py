"""``dicom-gateway ingest``: drain the spool once, without starting the node.

``ingest run --once`` de-identifies and indexes every entry waiting in the
spool (what ``serve``'s workers do continuously) and prints the counts. It
exits 1 when an entry had to be put back for a later attempt.
"""

from __future__ import annotations

import json

import click

from gateway.cli._context import AppContext, pass_app
from gateway.cli._exit import translate_errors
from gateway.cli._node import node_app
from gateway.errors import GatewayError, UsageError
from gateway.ingest import run_once

__all__ = ["ingest"]


@click.group()
def ingest() -> None:
    """De-identify and index what the spool holds."""


@ingest.command()
@click.option("--once", is_flag=True, help="Drain the spool once and exit (required).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_app
@translate_errors
def run(app: AppContext, once: bool, as_json: bool) -> None:
    """Process every spool entry once and print the counts."""
    if not once:
        raise UsageError("--once: required; continuous ingest runs inside: dicom-gateway serve")
    node = node_app(app)
    report = run_once(node)
    counts = {
        "stored": report.stored,
        "already_present": report.already_present,
        "quarantined": report.quarantined,
        "retry": report.retry,
        "total": report.total,
        "spool_depth": node.spool.depth(),
    }
    if as_json:
        click.echo(json.dumps(counts, indent=2))
    else:
        width = max(len(name) for name in counts) + 1
        for name, value in counts.items():
            click.echo(f"{name + ':':<{width}} {value}")
    if report.retry:
        raise GatewayError(
            f"ingest: {report.retry} entry left in the spool for a later attempt; "
            "see the log for the reason"
        )
