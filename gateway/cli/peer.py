"""``dicom-gateway peer``: register, change, list, show and remove remote AEs; C-ECHO them.

``peer add`` and ``peer update`` check every value and name the offending
option on failure (exit 2); an unknown slug exits 3; ``peer echo`` exits 4
when the peer cannot be reached and 1 when it answers with anything but
success. ``--scope`` says which studies a query or retrieve peer finds:
``all``, ``sent`` (the studies it sent; the default) or ``routed`` (the
studies routed to it, i.e. with a forward job to it). A destination's
forwarding options: ``--max-associations`` (jobs sent to it at once, over
every node), its retry policy (``--max-attempts``, ``--first-delay``,
``--backoff-multiplier``, ``--max-delay``; unset values, and all of them after
``update --retry-default``, follow ``[forward]``) and ``--transfer-syntax``
(``stored``, or ``uncompressed``: always Explicit VR Little Endian). Adding,
changing and removing a peer are audited with the OS user as the actor.
"""

from __future__ import annotations

import getpass
import ipaddress
import json
import re
import socket
from collections.abc import Callable
from typing import Any, TypeVar

import click
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

import storage.audit as audit
import storage.peers as peers
from gateway.cli._context import AppContext, pass_app
from gateway.cli._exit import translate_errors
from gateway.cli._node import node_app, print_record, print_table, storage_failure
from gateway.errors import GatewayError, NotFoundError, PeerUnreachable, UsageError
from gateway.scp import set_tcp_nodelay
from gateway.tls import close_transport, tls_args
from storage.db import session_scope
from storage.errors import StorageError
from storage.models import PeerScope
from storage.records import PeerRecord

__all__ = ["peer"]

#: storage's field names in its messages, as the options that set them
_OPTIONS = {
    "slug": "SLUG",
    "ae_title": "--ae-title",
    "host": "--host",
    "port": "--port",
    "roles": "--role",
    "pinned_address": "--pin-address",
    "scope": "--scope",
    "schedule": "--schedule",
    "pseudonyms": "--pseudonyms",
    "max_associations": "--max-associations",
    "max_attempts": "--max-attempts",
    "first_delay_seconds": "--first-delay",
    "backoff_multiplier": "--backoff-multiplier",
    "max_delay_seconds": "--max-delay",
    "transfer_syntax": "--transfer-syntax",
    "certificate_sha256": "--certificate-sha256",
}
_FIELD = re.compile(rf"^peer ({'|'.join(_OPTIONS)}):")
_SPACE = click.Choice(peers.PSEUDONYM_SPACES)
_Command = TypeVar("_Command", bound=Callable[..., Any])
_SCOPE = click.Choice(peers.SCOPES)


@click.group()
def peer() -> None:
    """Register, change, list, show and remove remote AEs; C-ECHO them."""


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _port(value: str) -> int:
    try:
        port = int(value, 10)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise UsageError(f"--port: expected an integer 1-65535, got {value!r}")
    return port


def _number(field: str, value: str) -> int:
    """An option of :data:`storage.peers.LIMITS` as an integer within its range."""
    low, high = peers.LIMITS[field]
    try:
        number = int(value, 10)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise UsageError(f"{_OPTIONS[field]}: expected an integer {low}-{high}, got {value!r}")
    return number


def _destination_options(given: dict[str, str | None]) -> dict[str, int | str]:
    """The forwarding options given (``field: text``), checked, as :class:`PeerRecord` fields."""
    options: dict[str, int | str] = {
        field: _number(field, text) for field, text in given.items()
        if text is not None and field in peers.LIMITS}
    if given.get("transfer_syntax") is not None:
        options["transfer_syntax"] = str(given["transfer_syntax"])
    return options


def _with_destination_options(command: _Command) -> _Command:
    """The options of a destination's forwarding (see the module docstring)."""
    for name, field, meta, text in reversed([
        ("--max-associations", "max_associations", "N",
         "Jobs sent to this destination at once, over every node (default 1)."),
        ("--max-attempts", "max_attempts", "N", "Attempts before a job fails ([forward])."),
        ("--first-delay", "first_delay_seconds", "SECONDS",
         "The wait after a first failed attempt ([forward])."),
        ("--backoff-multiplier", "backoff_multiplier", "N",
         "Each later wait is this many times the last ([forward])."),
        ("--max-delay", "max_delay_seconds", "SECONDS",
         "The longest wait between attempts ([forward])."),
        ("--transfer-syntax", "transfer_syntax", "stored|uncompressed",
         "Send as stored (uncompressed when not accepted), or always uncompressed."),
    ]):
        command = click.option(name, field, default=None, metavar=meta, help=text)(command)
    return command


def _roles(values: tuple[str, ...]) -> tuple[str, ...]:
    roles = tuple(role.strip().lower() for value in values for role in value.split(","))
    unknown = [role for role in roles if role not in peers.ROLES]
    if unknown or not roles:
        got = ", ".join(repr(role) for role in unknown) if unknown else "none"
        raise UsageError(f"--role: expected one or more of {', '.join(peers.ROLES)}, got {got}")
    return roles


def _address(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise UsageError(
            f"--pin-address: expected an IPv4 or IPv6 address, got {value!r}"
        ) from None


def _as_usage(exc: StorageError) -> UsageError:
    message = " ".join(str(exc).split())
    match = _FIELD.match(message)
    if match is not None:
        message = f"{_OPTIONS[match.group(1)]}:{message[match.end():]}"
    return UsageError(message)


def _as_dict(record: PeerRecord) -> dict[str, Any]:
    return {
        "slug": record.slug,
        "ae_title": record.ae_title,
        "host": record.host,
        "port": record.port,
        "roles": list(record.roles),
        "pinned_address": record.pinned_address,
        "scope": record.scope.value,
        "schedule": record.schedule,
        "pseudonyms": record.pseudonyms,
        "tls": record.tls,
        "certificate_sha256": record.certificate_sha256,
        "max_associations": record.max_associations,
        **{field: getattr(record, field) for field in peers.POLICY_FIELDS},
        "transfer_syntax": record.transfer_syntax,
        "created_at": record.created_at.isoformat() if record.created_at else None,
    }


def _get(app: AppContext, slug: str) -> PeerRecord:
    node = node_app(app)
    try:
        with session_scope(node.engine, readonly=True) as session:
            record = peers.get(session, slug)
    except StorageError as exc:
        raise storage_failure(exc) from exc
    if record is None:
        raise NotFoundError(f"peer {slug!r} not found; see: dicom-gateway peer list")
    return record


@peer.command()
@click.argument("slug")
@click.option("--ae-title", required=True, help="The peer's AE title (1-16 characters).")
@click.option("--host", required=True, help="Host name or address to connect to.")
@click.option("--port", "port_text", required=True, metavar="PORT", help="TCP port, 1-65535.")
@click.option(
    "--role",
    "role_values",
    multiple=True,
    required=True,
    metavar="ROLE",
    help="source, query, retrieve, destination or results; repeat for several.",
)
@click.option("--pin-address", default=None, metavar="IP",
              help="Accept this peer's associations only from this address.")
@click.option("--scope", type=_SCOPE, default="sent", show_default=True,
              help="The studies it finds and retrieves: all, sent (by it), routed (to it).")
@click.option("--schedule", default="immediate", show_default=True, metavar="WHEN",
              help="When a destination may be sent to: immediate, or five cron fields and a "
                   "time zone, e.g. '* 22-23,0-5 * * mon-fri Europe/Berlin'.")
@click.option("--pseudonyms", type=_SPACE, default="shared", show_default=True,
              help="A destination's pseudonym space: the node's (shared) or its own.")
@_with_destination_options
@pass_app
@translate_errors
def add(app: AppContext, /, slug: str, ae_title: str, host: str, port_text: str,
        role_values: tuple[str, ...], pin_address: str | None, scope: str,
        schedule: str, pseudonyms: str, **forwarding: str | None) -> None:
    """Register a peer under SLUG (lowercase letters, digits, dashes)."""
    wanted = PeerRecord(
        slug=slug, ae_title=ae_title, host=host, port=_port(port_text),
        roles=_roles(role_values), pinned_address=_address(pin_address),
        scope=PeerScope(scope), schedule=schedule, pseudonyms=pseudonyms,
        **_destination_options(forwarding),  # type: ignore[arg-type]
    )
    node = node_app(app)
    try:
        with session_scope(node.engine) as session:
            try:
                record = peers.add(session, wanted)
            except StorageError as exc:
                raise _as_usage(exc) from exc
            audit.record(session, "peer-add", _actor(), "success", detail=f"peer {record.slug}")
    except StorageError as exc:
        raise storage_failure(exc) from exc
    click.echo(f"peer {record.slug} added ({record.ae_title}@{record.host}:{record.port}, "
               f"roles {','.join(record.roles)}, scope {record.scope.value})")


@peer.command()
@click.argument("slug")
@click.option("--ae-title", default=None, help="The peer's AE title (1-16 characters).")
@click.option("--host", default=None, help="Host name or address to connect to.")
@click.option("--port", "port_text", default=None, metavar="PORT", help="TCP port, 1-65535.")
@click.option("--role", "role_values", multiple=True, metavar="ROLE",
              help="Replaces the roles: source, query, retrieve, destination or results; repeat.")
@click.option("--pin-address", default=None, metavar="IP",
              help="Accept this peer's associations only from this address.")
@click.option("--unpin", is_flag=True, help="Accept this peer's associations from any address.")
@click.option("--scope", type=_SCOPE, default=None,
              help="The studies it finds and retrieves: all, sent (by it), routed (to it).")
@click.option("--schedule", default=None, metavar="WHEN",
              help="immediate, or five cron fields and a time zone (a destination's window).")
@click.option("--pseudonyms", type=_SPACE, default=None,
              help="A destination's pseudonym space: shared or own.")
@_with_destination_options
@click.option("--retry-default", is_flag=True,
              help="Follow [forward] again for the whole retry policy.")
@pass_app
@translate_errors
def update(app: AppContext, /, slug: str, ae_title: str | None, host: str | None,
           port_text: str | None, role_values: tuple[str, ...], pin_address: str | None,
           unpin: bool, scope: str | None, schedule: str | None,
           pseudonyms: str | None, retry_default: bool, **forwarding: str | None) -> None:
    """Change some of a peer's values (audited); exit 3 when there is none with SLUG."""
    changes: peers.PeerChanges = {}
    options = _destination_options(forwarding)
    if retry_default:
        if given := [_OPTIONS[field] for field in peers.POLICY_FIELDS if field in options]:
            raise UsageError(f"--retry-default and {', '.join(given)}: give one or the other")
        options.update({field: None for field in peers.POLICY_FIELDS})  # type: ignore[misc]
    changes.update(options)  # type: ignore[typeddict-item]
    if ae_title is not None:
        changes["ae_title"] = ae_title
    if host is not None:
        changes["host"] = host
    if port_text is not None:
        changes["port"] = _port(port_text)
    if role_values:
        changes["roles"] = _roles(role_values)
    if pin_address is not None and unpin:
        raise UsageError("--pin-address and --unpin: give one or the other")
    if pin_address is not None or unpin:
        changes["pinned_address"] = _address(pin_address)
    if scope is not None:
        changes["scope"] = scope
    if schedule is not None:
        changes["schedule"] = schedule
    if pseudonyms is not None:
        changes["pseudonyms"] = pseudonyms
    if not changes:
        raise UsageError("nothing to change: give --ae-title, --host, --port, --role, "
                         "--pin-address, --unpin, --scope, --schedule, --pseudonyms, "
                         "--max-associations, a retry option or --transfer-syntax")
    node = node_app(app)
    try:
        with session_scope(node.engine) as session:
            try:
                record = peers.update(session, slug, **changes)
            except StorageError as exc:
                raise _as_usage(exc) from exc
            if record is not None:
                audit.record(session, "peer-update", _actor(), "success",
                             detail=f"peer {slug}: {', '.join(sorted(changes))}")
    except StorageError as exc:
        raise storage_failure(exc) from exc
    if record is None:
        raise NotFoundError(f"peer {slug!r} not found; see: dicom-gateway peer list")
    click.echo(f"peer {record.slug} updated ({record.ae_title}@{record.host}:{record.port}, "
               f"roles {','.join(record.roles)}, scope {record.scope.value})")


@peer.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_app
@translate_errors
def list_(app: AppContext, as_json: bool) -> None:
    """List the registered peers."""
    node = node_app(app)
    try:
        with session_scope(node.engine, readonly=True) as session:
            records = peers.list_all(session)
    except StorageError as exc:
        raise storage_failure(exc) from exc
    if as_json:
        click.echo(json.dumps([_as_dict(record) for record in records], indent=2))
        return
    if not records:
        click.echo("no peers; add one with: dicom-gateway peer add", err=True)
        return
    header = ("SLUG", "AE TITLE", "HOST", "PORT", "ROLES", "SCOPE", "PINNED")
    rows = [
        (r.slug, r.ae_title, r.host, str(r.port), ",".join(r.roles), r.scope.value,
         r.pinned_address or "-")
        for r in records
    ]
    print_table(header, rows)


@peer.command()
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_app
@translate_errors
def show(app: AppContext, slug: str, as_json: bool) -> None:
    """Show one peer; exit 3 when there is none with SLUG."""
    data = _as_dict(_get(app, slug))
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    forward = app.settings.forward
    defaults = {"max_attempts": forward.max_attempts,
                "first_delay_seconds": forward.first_delay_seconds,
                "backoff_multiplier": forward.backoff_multiplier,
                "max_delay_seconds": forward.max_delay_seconds}
    print_record({key: f"{defaults[key]} ([forward] default)"
                  if key in defaults and value is None else value
                  for key, value in data.items()})


@peer.command()
@click.argument("slug")
@pass_app
@translate_errors
def remove(app: AppContext, slug: str) -> None:
    """Remove a peer (audited); exit 3 when there is none with SLUG."""
    node = node_app(app)
    try:
        with session_scope(node.engine) as session:
            removed = peers.remove(session, slug)
            if removed:
                audit.record(session, "peer-remove", _actor(), "success", detail=f"peer {slug}")
    except StorageError as exc:
        raise storage_failure(exc) from exc
    if not removed:
        raise NotFoundError(f"peer {slug!r} not found; see: dicom-gateway peer list")
    click.echo(f"peer {slug} removed")


@peer.command()
@click.argument("slug")
@pass_app
@translate_errors
def echo(app: AppContext, slug: str) -> None:
    """Send a C-ECHO to the peer; exit 4 when unreachable, 1 when it fails."""
    record = _get(app, slug)
    settings = app.settings
    ae = AE(ae_title=settings.node.ae_title)
    ae.add_requested_context(Verification)
    ae.acse_timeout = settings.limits.acse_timeout
    ae.dimse_timeout = settings.limits.dimse_timeout
    ae.network_timeout = settings.limits.network_timeout
    ae.connection_timeout = settings.limits.network_timeout
    where = f"{record.ae_title}@{record.host}:{record.port}"
    # Open and close a plain TCP connection first: it names why a peer cannot
    # be reached, and pynetdicom (3.0) does not close its socket when the
    # connection is refused.
    try:
        with socket.create_connection((record.host, record.port),
                                      timeout=settings.limits.network_timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise PeerUnreachable(
            f"peer {slug} ({where}) cannot be reached ({reason}); check --host and --port"
        ) from exc
    assoc = ae.associate(record.host, record.port, ae_title=record.ae_title,
                         tls_args=tls_args(settings.tls, record),
                         evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay)])
    try:
        if assoc.is_rejected:
            raise GatewayError(f"peer {slug} ({where}) rejected the association from "
                               f"{settings.node.ae_title}; check its AE configuration")
        if not assoc.is_established:
            raise PeerUnreachable(f"peer {slug} ({where}) cannot be reached; "
                                  "check --host and --port")
        status = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
        else:
            close_transport(assoc)
        ae.shutdown()
    code = getattr(status, "Status", None)
    if code is None:
        raise GatewayError(f"peer {slug} ({where}) did not answer the C-ECHO")
    if code != 0x0000:
        raise GatewayError(f"peer {slug} ({where}) answered the C-ECHO with status 0x{code:04X}")
    click.echo(f"peer {slug} ({where}): C-ECHO status 0x{code:04X} (success)")


# ``peer tls`` lives in its own module; importing it registers it on this group.
from gateway.cli import peer_tls  # noqa: E402,F401
