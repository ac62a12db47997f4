"""``dicom-gateway audit list``: read the audit trail (RELIABILITY.md I5, PS3.15 A.5).

``audit list [--since WHEN] [--event NAME ...] [--limit N] [--json]`` prints
the most recent records (at most ``--limit``, 1000 by default), oldest
first: time (UTC), event, outcome, who, the study's remapped UID and the
detail; each line also names the record's PS3.15 A.5.3 Event ID.
``--since`` takes an ISO 8601 date or date-time (UTC unless it names an
offset) or an age such as ``30m``, ``12h``, ``7d``. Nothing here holds PHI:
the trail never does. A bad argument exits 2.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click

import storage.audit as audit
from gateway.auditlog import AUDIT_CODES, code_of
from gateway.cli._context import AppContext, pass_app
from gateway.cli._exit import translate_errors
from gateway.cli._node import node_app, print_table
from gateway.errors import UsageError
from storage.db import session_scope
from storage.records import AuditEvent

__all__ = ["audit_group", "parse_since"]

_AGE = re.compile(r"([0-9]{1,6})([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_MOST = 1_000_000


def parse_since(value: str, now: datetime) -> datetime:
    """``--since``: an ISO 8601 date or date-time (UTC unless an offset is given), or an age.

    Raises
    ------
    gateway.errors.UsageError
        When the value is neither.
    """
    text = value.strip()
    age = _AGE.fullmatch(text)
    if age:
        return now - timedelta(**{_UNITS[age.group(2)]: int(age.group(1))})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since: expected an ISO 8601 date or date-time (2026-11-27, "
                         f"2026-11-27T08:00) or an age (30m, 12h, 7d), got {value!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _limit(value: str) -> int:
    text = value.strip()
    if not text.isdigit() or not 1 <= int(text) <= _MOST:
        raise UsageError(f"--limit: expected an integer 1-{_MOST}, got {value!r}")
    return int(text)


def _row(item: AuditEvent) -> dict[str, Any]:
    code = code_of(item.event)
    return {
        "id": item.id, "at": item.at.astimezone(UTC).isoformat(), "event": item.event,
        "outcome": item.outcome.value, "actor": item.actor,
        "study_instance_uid": item.study_instance_uid, "detail": item.detail,
        "dicom_event_id": code.event_id, "dicom_event": code.display,
    }


@click.group(name="audit")
def audit_group() -> None:
    """The audit trail: who did what, when, with what outcome (never PHI)."""


@audit_group.command(name="list")
@click.option("--since", help="Records at or after this time (ISO 8601) or age (30m, 12h, 7d).")
@click.option("--event", "events", multiple=True, metavar="NAME",
              help=f"Only this event (repeatable), e.g. {', '.join(sorted(AUDIT_CODES)[:4])}.")
@click.option("--limit", default=str(audit.DEFAULT_LIMIT), show_default=True, metavar="N",
              help="At most this many, the most recent.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_app
@translate_errors
def list_(app: AppContext, since: str | None, events: tuple[str, ...], limit: str,
          as_json: bool) -> None:
    """List audit records, oldest first (the most recent --limit of them)."""
    start = parse_since(since, datetime.now(UTC)) if since is not None else None
    count = _limit(limit)
    node = node_app(app)
    found: list[AuditEvent] = []
    with session_scope(node.engine, readonly=True) as session:
        for name in events or (None,):
            found += audit.list_events(session, since=start, event=name, limit=count,
                                       newest=True)
    found = sorted(found, key=lambda item: item.id)[-count:]
    if as_json:
        click.echo(json.dumps([_row(item) for item in found], indent=2))
        return
    print_table(
        ["AT", "EVENT", "DICOM", "OUTCOME", "WHO", "STUDY", "DETAIL"],
        [[item.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), item.event,
          code_of(item.event).event_id, item.outcome.value, item.actor,
          item.study_instance_uid or "-", item.detail] for item in found])
