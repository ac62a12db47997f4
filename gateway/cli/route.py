"""``dicom-gateway route``: the rules that send studies to consulting institutes.

A route has a name, destinations (peers with the ``destination`` role), a
priority and conditions ``KEYWORD=PATTERN`` (a glob, ``re:REGEX``,
``range:LOW-HIGH``, any of them negated with ``!``; :mod:`storage.rules`).
Routes are evaluated in ascending priority, then by name; every enabled
route whose conditions all match sends the study to its destinations
(:mod:`gateway.routing`). ``route test`` explains, rule by rule, what a
study matches and why.

Changing routes never re-sends what was delivered: the forward queue keys
its jobs by study and destination, and routes are read when a study is
routed. Bad arguments exit 2 with one line naming the option and the
value; an unknown route or study exits 3. Every change is audited with the
OS user as the actor.
"""

from __future__ import annotations

import getpass
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

import click

import storage.audit as audit
import storage.routes as routes
from gateway.cli._context import AppContext, pass_app
from gateway.cli._exit import translate_errors
from gateway.cli._node import node_app, print_record, print_table, storage_failure
from gateway.errors import GatewayError, NotFoundError, UsageError
from gateway.routefile import RouteFileError, dumps, loads
from gateway.routing import RouteDecision, destinations, evaluate, is_held, load_facts
from storage.db import session_scope
from storage.errors import StorageError
from storage.routes import RouteRecord, RouteSpec

__all__ = ["route"]

#: storage's field names in its messages, as the options that set them
_OPTIONS: Final = {"name": "NAME", "priority": "--priority", "destinations": "--to",
                   "conditions": "--when", "enabled": "--disabled"}
_FIELD: Final = re.compile(r"^route (name|priority|destinations|conditions|enabled):")
_INTEGER: Final = re.compile(r"[+-]?\d{1,10}")


@click.group()
def route() -> None:
    """Add, list, show, enable, disable, remove, export, import and test routes.

    Routes are evaluated by ascending priority, then name; every enabled route
    whose conditions all match sends the study to its destinations. Changing
    routes never re-sends what was already delivered.
    """


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _as_usage(exc: StorageError) -> UsageError:
    message = " ".join(str(exc).split())
    match = _FIELD.match(message)
    if match is not None:
        message = f"{_OPTIONS[match.group(1)]}:{message[match.end():]}"
    return UsageError(message)


def _not_found(name: str) -> NotFoundError:
    return NotFoundError(f"route {name!r} not found; see: dicom-gateway route list")


def _priority(value: str) -> int:
    if not _INTEGER.fullmatch(value.strip()):
        raise UsageError(f"--priority: expected an integer, got {value!r}")
    return int(value)


def _slugs(values: tuple[str, ...]) -> tuple[str, ...]:
    slugs = tuple(slug.strip() for value in values for slug in value.split(","))
    if not slugs or not all(slugs):
        raise UsageError(f"--to: expected peer slugs separated by commas, got "
                         f"{','.join(values)!r}")
    return slugs


def _as_dict(record: RouteRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "enabled": record.enabled,
        "priority": record.priority,
        "destinations": list(record.destinations),
        "conditions": list(record.conditions),
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


def _conditions(record: RouteRecord) -> str:
    return " AND ".join(record.conditions) or "(none: every study)"


def _all(app: AppContext) -> list[RouteRecord]:
    try:
        with session_scope(node_app(app).engine, readonly=True) as session:
            return routes.list_all(session)
    except StorageError as exc:
        raise storage_failure(exc) from exc


@route.command()
@click.argument("name")
@click.option("--to", "to_values", multiple=True, required=True, metavar="SLUG[,SLUG...]",
              help="Destination peers (with the destination role); repeat or separate by commas.")
@click.option("--when", "conditions", multiple=True, metavar="KEYWORD=PATTERN",
              help="A condition; repeat for several, all must match. PATTERN: a glob, "
                   "re:REGEX or range:LOW-HIGH, negated with a leading '!'.")
@click.option("--priority", "priority_text", default=str(routes.DEFAULT_PRIORITY),
              show_default=True, metavar="N", help="Lower is evaluated first.")
@click.option("--disabled", is_flag=True, help="Add it disabled.")
@pass_app
@translate_errors
def add(app: AppContext, name: str, to_values: tuple[str, ...], conditions: tuple[str, ...],
        priority_text: str, disabled: bool) -> None:
    """Add the route NAME (lowercase letters, digits, dashes); audited."""
    wanted = RouteSpec(name=name, destinations=_slugs(to_values), conditions=conditions,
                       priority=_priority(priority_text), enabled=not disabled)
    try:
        with session_scope(node_app(app).engine) as session:
            try:
                record = routes.add(session, wanted)
            except StorageError as exc:
                raise _as_usage(exc) from exc
            audit.record(session, "route-add", _actor(), "success", detail=f"route {name}")
    except StorageError as exc:
        raise storage_failure(exc) from exc
    state = "enabled" if record.enabled else "disabled"
    click.echo(f"route {record.name} added ({state}, priority {record.priority}, to "
               f"{','.join(record.destinations)}, when {_conditions(record)})")


@route.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_app
@translate_errors
def list_(app: AppContext, as_json: bool) -> None:
    """List the routes in evaluation order (ascending priority, then name)."""
    records = _all(app)
    if as_json:
        click.echo(json.dumps([_as_dict(record) for record in records], indent=2))
        return
    if not records:
        click.echo("no routes; add one with: dicom-gateway route add", err=True)
        return
    print_table(("PRIORITY", "NAME", "ENABLED", "DESTINATIONS", "CONDITIONS"), [
        (str(r.priority), r.name, "yes" if r.enabled else "no", ",".join(r.destinations),
         _conditions(r)) for r in records])


@route.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_app
@translate_errors
def show(app: AppContext, name: str, as_json: bool) -> None:
    """Show one route; exit 3 when there is none named NAME."""
    try:
        with session_scope(node_app(app).engine, readonly=True) as session:
            record = routes.get(session, name)
    except StorageError as exc:
        raise storage_failure(exc) from exc
    if record is None:
        raise _not_found(name)
    data = _as_dict(record)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    data["conditions"] = _conditions(record)
    print_record(data)


@route.command()
@click.argument("name")
@pass_app
@translate_errors
def remove(app: AppContext, name: str) -> None:
    """Remove a route (audited); exit 3 when there is none named NAME."""
    try:
        with session_scope(node_app(app).engine) as session:
            removed = routes.remove(session, name)
            if removed:
                audit.record(session, "route-remove", _actor(), "success",
                             detail=f"route {name}")
    except StorageError as exc:
        raise storage_failure(exc) from exc
    if not removed:
        raise _not_found(name)
    click.echo(f"route {name} removed")


def _switch(app: AppContext, name: str, enabled: bool) -> None:
    word = "enabled" if enabled else "disabled"
    try:
        with session_scope(node_app(app).engine) as session:
            before = routes.get(session, name)
            if before is None:
                raise _not_found(name)
            if before.enabled == enabled:
                click.echo(f"route {name} is already {word}")
                return
            routes.update(session, name, enabled=enabled)
            audit.record(session, f"route-{'enable' if enabled else 'disable'}", _actor(),
                         "success", detail=f"route {name}")
    except StorageError as exc:
        raise storage_failure(exc) from exc
    click.echo(f"route {name} {word}")


@route.command()
@click.argument("name")
@pass_app
@translate_errors
def enable(app: AppContext, name: str) -> None:
    """Enable a route (audited); exit 3 when there is none named NAME."""
    _switch(app, name, True)


@route.command()
@click.argument("name")
@pass_app
@translate_errors
def disable(app: AppContext, name: str) -> None:
    """Disable a route: it is kept, and matches nothing (audited)."""
    _switch(app, name, False)


@route.command(name="export")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@pass_app
@translate_errors
def export(app: AppContext, file: Path | None) -> None:
    """Write every route as TOML to FILE, or to stdout without one."""
    records = _all(app)
    text = dumps(record.spec() for record in records)
    if file is None:
        click.echo(text, nl=False)
        return
    try:
        file.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise GatewayError(f"FILE: cannot write {file} ({exc.strerror or exc})") from exc
    click.echo(f"{len(records)} routes exported to {file}", err=True)


@route.command(name="import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Also remove the routes FILE does not name.")
@pass_app
@translate_errors
def import_(app: AppContext, file: Path, replace: bool) -> None:
    """Apply the routes in the TOML FILE, all or none (audited).

    Every route is checked first; then they are added or changed in one
    transaction. Routes the file does not name are kept, or removed with
    --replace.
    """
    try:
        specs = loads(file.read_text(encoding="utf-8"), str(file))
    except OSError as exc:
        raise UsageError(f"FILE: cannot read {file} ({exc.strerror or exc})") from exc
    except UnicodeDecodeError:
        raise UsageError(f"FILE: expected UTF-8 TOML, got undecodable bytes in {file}") from None
    except RouteFileError as exc:
        raise UsageError(str(exc)) from exc
    actor = _actor()
    try:
        with session_scope(node_app(app).engine) as session:
            try:
                report = routes.sync(session, specs, replace=replace)
            except StorageError as exc:
                raise UsageError(f"{file}: {' '.join(str(exc).split())}") from exc
            for name in report.added:
                audit.record(session, "route-add", actor, "success", detail=f"route {name} "
                             "(import)")
            for name, fields in report.changed:
                audit.record(session, "route-update", actor, "success",
                             detail=f"route {name}: {', '.join(fields)} (import)")
            for name in report.removed:
                audit.record(session, "route-remove", actor, "success",
                             detail=f"route {name} (import)")
    except StorageError as exc:
        raise storage_failure(exc) from exc
    for name in report.added:
        click.echo(f"added {name}")
    for name, fields in report.changed:
        click.echo(f"changed {name} ({', '.join(fields)})")
    for name in report.removed:
        click.echo(f"removed {name}")
    click.echo(f"{file}: {len(report.added)} added, {len(report.changed)} changed, "
               f"{len(report.removed)} removed, {len(report.unchanged)} unchanged", err=True)


def _decision_dict(decision: RouteDecision) -> dict[str, Any]:
    data = asdict(decision)
    data["destinations"] = list(decision.destinations)
    data["conditions"] = [dict(item, values=list(item["values"]))
                          for item in data["conditions"]]
    return data


def _values(values: tuple[str, ...]) -> str:
    return ", ".join(values) if values else "(none)"


@route.command(name="test")
@click.argument("study_uid")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_app
@translate_errors
def test(app: AppContext, study_uid: str, as_json: bool) -> None:
    """Show, rule by rule, whether the study STUDY_UID matches each route and why.

    STUDY_UID is the study's StudyInstanceUID in the index (the new one, as
    study list shows it). Nothing is sent. Exit 3 when the index has no such
    study.
    """
    try:
        with session_scope(node_app(app).engine, readonly=True) as session:
            facts = load_facts(session, study_uid)
            records = routes.list_all(session)
    except StorageError as exc:
        raise storage_failure(exc) from exc
    if facts is None:
        raise NotFoundError(f"study {study_uid!r} not found in the index; "
                            "see: dicom-gateway study list")
    decisions = evaluate(records, facts)
    sending = destinations(decisions)
    if as_json:
        click.echo(json.dumps({
            "study_instance_uid": facts.study_instance_uid, "state": facts.state,
            "held": is_held(facts), "destinations": list(sending),
            "routes": [_decision_dict(decision) for decision in decisions],
        }, indent=2))
        return
    matched = sum(decision.matched for decision in decisions)
    where = f"to {', '.join(sending)}" if sending else "nowhere"
    click.echo(f"study {facts.study_instance_uid}: {matched} of {len(decisions)} routes "
               f"match; routed {where}")
    if is_held(facts):
        click.echo("  held: the study is quarantined and is not forwarded until released")
    if not decisions:
        click.echo("no routes; add one with: dicom-gateway route add", err=True)
    for decision in decisions:
        outcome = "MATCH" if decision.matched else "no match"
        target = f" -> {','.join(decision.destinations)}" if decision.matched else ""
        click.echo(f"route {decision.route} (priority {decision.priority}): "
                   f"{outcome}{target}: {decision.reason}")
        for result in decision.conditions:
            mark = "yes" if result.matched else "no"
            click.echo(f"  [{mark}] {result.condition}: values {_values(result.values)}; "
                       f"{result.reason}")
