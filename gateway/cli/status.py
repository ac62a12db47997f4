"""``dicom-gateway status [--json]``: the node's health, for people and for monitoring.

Prints the listeners (and whether each port answers), the spool depth, the
quarantine, the forward queue by state and destination, the oldest job
still to be sent, the free disk space of the data folder, and the problems
found (:mod:`gateway.health` defines them). Exit status 0 when healthy, 1
when unhealthy (so a monitoring system can run it as a check), and 1 when
the database cannot be opened at all. ``--json`` prints the same as one
JSON document, the exit status unchanged.
"""

from __future__ import annotations

import json

import click

from gateway.cli._context import AppContext, pass_app
from gateway.cli._exit import FAILED, translate_errors
from gateway.cli._node import node_app, print_table
from gateway.health import Health, check
from storage.queue_models import JobState

__all__ = ["status"]


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # pragma: no cover - the loop always returns


def _print(health: Health) -> None:
    data = health.to_dict()
    click.echo(f"status: {'healthy' if health.healthy else 'UNHEALTHY'}")
    for x in health.listeners:
        click.echo(f"listener: {x.ae_title} {x.bind}:{x.port}{' tls' if x.tls else ''} "
                   f"{'answering' if x.answering else 'NOT ANSWERING'}")
    oldest_spool = data["spool"]["oldest"] or "-"
    click.echo(f"spool: {health.spool_depth} waiting (oldest {oldest_spool})")
    click.echo(f"quarantine: {health.quarantine_held} held ({_size(health.quarantine_bytes)})")
    totals = data["queue"]["by_state"]
    click.echo("queue: " + ", ".join(f"{state.value} {totals[state.value]}" for state in JobState))
    by_destination = data["queue"]["by_destination"]
    if by_destination:
        print_table(["DESTINATION", *(state.value.upper() for state in JobState)],
                    [[name, *(str(states[state.value]) for state in JobState)]
                     for name, states in by_destination.items()])
    pending = data["queue"]["oldest_pending"]
    click.echo("oldest pending: " + ("-" if pending is None else
               f"job {pending['id']} to {pending['destination']} since {pending['created_at']} "
               f"({pending['age_seconds']}s)"))
    click.echo(f"disk: {_size(health.disk_free_bytes)} free of {_size(health.disk_total_bytes)} "
               f"({health.data_dir})")
    if health.spool_disk is not None:
        folder, free, total = health.spool_disk
        click.echo(f"spool disk: {_size(free)} free of {_size(total)} ({folder})")
    for problem in health.problems:
        click.echo(f"problem: {problem}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_app
@translate_errors
def status(app: AppContext, as_json: bool) -> None:
    """The node's health; exit 1 when unhealthy (listener down, disk low, jobs failing)."""
    health = check(node_app(app))
    if as_json:
        click.echo(json.dumps(health.to_dict(), indent=2))
    else:
        _print(health)
    if not health.healthy:
        click.get_current_context().exit(FAILED)
