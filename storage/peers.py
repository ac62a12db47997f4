"""Peers: the remote AEs an administrator registers, and their roles.

ARCHITECTURE.md, peers and access: every remote AE is a peer with roles
``source`` (may store), ``query`` (may find), ``retrieve`` (may move/get),
``destination`` (we send to it) and ``results`` (stores results of the
cases sent to it), optionally pinned to one address
(RELIABILITY.md T02). A query or retrieve peer has a scope: ``all``,
``sent`` (the studies it sent; the default) or ``routed`` (the studies
routed to it: those with a forward job to it). A destination has
forwarding options: how many associations it takes at once, its retry
policy (each value ``None`` for the ``[forward]`` default) and the transfer
syntax it is sent (``stored``, or ``uncompressed``: always Explicit VR
Little Endian, decompressed). A peer
has a lowercase slug for people and the database; its AE title is a field,
not its name (STYLE.md section 3). Every value is checked here, with a
message naming the field and the rule. A peer that a route sends to
(:mod:`storage.routes`) keeps its ``destination`` role and is not removed
until no route names it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final, TypedDict, Unpack

from sqlalchemy import Row, bindparam, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ._sql import table_of
from .errors import StorageError
from .models import Peer, PeerScope
from .records import PeerRecord
from .schedule import check_schedule
from .routes import routes_to

__all__ = [
    "LIMITS", "POLICY_FIELDS", "PSEUDONYM_SPACES", "ROLES", "SCOPES", "TRANSFER_SYNTAXES",
    "PeerChanges", "add", "by_ae_title", "get", "list_all", "remove", "update",
]

#: The roles a peer may have, in display order. ``results``: a consulting institute whose
#: stores are results of the cases sent to it, matched and re-identified for the clinic
#: (gateway.results), never new studies.
ROLES: Final = ("source", "query", "retrieve", "destination", "results")
#: A destination's pseudonym space: the node's own, or one keyed for it alone.
PSEUDONYM_SPACES: Final = ("shared", "own")
#: A destination's transfer syntax: as stored (uncompressed as a fallback), or always
#: Explicit VR Little Endian (decompressed when stored compressed).
TRANSFER_SYNTAXES: Final = ("stored", "uncompressed")
#: A destination's numeric options and their ranges (the policy's as in ``[forward]``).
LIMITS: Final = {
    "max_associations": (1, 64),
    "max_attempts": (1, 1000),
    "first_delay_seconds": (1, 86400),
    "backoff_multiplier": (1, 10),
    "max_delay_seconds": (1, 604800),
}
#: The retry policy's fields, each ``None`` for the ``[forward]`` default.
POLICY_FIELDS: Final = ("max_attempts", "first_delay_seconds", "backoff_multiplier",
                        "max_delay_seconds")
#: The scopes a peer may have (:class:`~storage.models.PeerScope`).
SCOPES: Final = tuple(scope.value for scope in PeerScope)

_SLUG: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_AE_MAX: Final = 16
_FINGERPRINT: Final = re.compile(r"[0-9a-f]{64}")


class PeerChanges(TypedDict, total=False):
    """The fields :func:`update` may change (the slug never changes)."""

    ae_title: str
    host: str
    port: int
    roles: Iterable[str]
    pinned_address: str | None
    scope: str
    schedule: str
    pseudonyms: str
    tls: bool
    certificate_sha256: str | None
    max_associations: int
    max_attempts: int | None
    first_delay_seconds: int | None
    backoff_multiplier: int | None
    max_delay_seconds: int | None
    transfer_syntax: str


def _check_slug(slug: str) -> str:
    if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
        raise StorageError(
            f"peer slug: expected 1-63 characters a-z, 0-9 and '-', starting with a letter "
            f"or digit, got {slug!r}"
        )
    return slug


def _check_ae_title(ae_title: str) -> str:
    """PS3.5 6.2 AE: 1-16 characters, no backslash or control characters, not blank."""
    value = ae_title.strip(" ") if isinstance(ae_title, str) else ""
    if (not value or len(ae_title) > _AE_MAX or "\\" in ae_title
            or any(ord(char) < 0x20 or ord(char) == 0x7F for char in ae_title)
            or not ae_title.isascii()):
        raise StorageError(
            f"peer ae_title: expected 1-{_AE_MAX} ASCII characters without backslash or "
            f"control characters, got {ae_title!r}"
        )
    return value


def _check_host(host: str) -> str:
    if (not isinstance(host, str) or not host.strip() or len(host) > 255
            or any(char.isspace() or ord(char) < 0x20 for char in host)):
        raise StorageError(f"peer host: expected a host name or address, got {host!r}")
    return host


def _check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise StorageError(f"peer port: expected an integer 1-65535, got {port!r}")
    return port


def _check_roles(roles: Iterable[str]) -> tuple[str, ...]:
    given = [roles] if isinstance(roles, str) else list(roles)
    unknown = sorted({str(role) for role in given} - set(ROLES))
    if unknown or not given:
        raise StorageError(
            f"peer roles: expected one or more of {', '.join(ROLES)}, got "
            f"{', '.join(unknown) if unknown else 'none'}"
        )
    return tuple(role for role in ROLES if role in given)


def _check_address(address: str | None) -> str | None:
    if address is None or address == "":
        return None
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise StorageError(
            f"peer pinned_address: expected an IPv4 or IPv6 address, got {address!r}"
        ) from None


def _check_scope(scope: str) -> PeerScope:
    try:
        return PeerScope(scope)
    except ValueError:
        raise StorageError(
            f"peer scope: expected one of {', '.join(SCOPES)}, got {scope!r}"
        ) from None


def _check_pseudonyms(space: str) -> str:
    if space not in PSEUDONYM_SPACES:
        raise StorageError(f"peer pseudonyms: expected one of {', '.join(PSEUDONYM_SPACES)}, "
                           f"got {space!r}")
    return space


def _check_fingerprint(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.replace(":", "").strip().lower()
    if not _FINGERPRINT.fullmatch(text):
        raise StorageError("peer certificate_sha256: expected a SHA-256 fingerprint "
                           f"(64 hex digits, colons allowed), got {value!r}")
    return text


def _check_number(field: str, value: int) -> int:
    low, high = LIMITS[field]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise StorageError(f"peer {field}: expected an integer {low}-{high}, got {value!r}")
    return value


def _check_optional(field: str, value: int | None) -> int | None:
    """A retry policy value: ``None`` (the ``[forward]`` default) or within its range."""
    return None if value is None else _check_number(field, value)


def _check_transfer_syntax(value: str) -> str:
    if value not in TRANSFER_SYNTAXES:
        raise StorageError(f"peer transfer_syntax: expected one of "
                           f"{', '.join(TRANSFER_SYNTAXES)}, got {value!r}")
    return value


def _record(row: Peer | Row[Any]) -> PeerRecord:
    return PeerRecord(
        slug=row.slug, ae_title=row.ae_title, host=row.host, port=row.port,
        roles=tuple(role for role in row.roles.split(",") if role),
        pinned_address=row.pinned_address, scope=PeerScope(row.scope), schedule=row.schedule,
        pseudonyms=row.pseudonyms, tls=bool(row.tls),
        certificate_sha256=row.certificate_sha256, max_associations=row.max_associations,
        max_attempts=row.max_attempts, first_delay_seconds=row.first_delay_seconds,
        backoff_multiplier=row.backoff_multiplier, max_delay_seconds=row.max_delay_seconds,
        transfer_syntax=row.transfer_syntax,
        created_at=row.created_at,
    )


def _row(session: Session, slug: str) -> Peer | None:
    return session.execute(
        select(Peer).where(Peer.slug == slug).execution_options(populate_existing=True)
    ).scalar_one_or_none()


def add(session: Session, peer: PeerRecord) -> PeerRecord:
    """Register a peer.

    Parameters
    ----------
    session : Session
        The caller's session.
    peer : PeerRecord
        The values; ``created_at`` is ignored and set now.

    Returns
    -------
    PeerRecord
        As stored: roles in canonical order, the AE title without padding
        spaces, the address normalized.

    Raises
    ------
    StorageError
        When a value breaks its rule, or the slug is taken.
    """
    slug = _check_slug(peer.slug)
    row = Peer(
        slug=slug, ae_title=_check_ae_title(peer.ae_title), host=_check_host(peer.host),
        port=_check_port(peer.port), roles=",".join(_check_roles(peer.roles)),
        pinned_address=_check_address(peer.pinned_address), scope=_check_scope(peer.scope),
        schedule=check_schedule(peer.schedule), pseudonyms=_check_pseudonyms(peer.pseudonyms),
        tls=bool(peer.tls), certificate_sha256=_check_fingerprint(peer.certificate_sha256),
        max_associations=_check_number("max_associations", peer.max_associations),
        max_attempts=_check_optional("max_attempts", peer.max_attempts),
        first_delay_seconds=_check_optional("first_delay_seconds", peer.first_delay_seconds),
        backoff_multiplier=_check_optional("backoff_multiplier", peer.backoff_multiplier),
        max_delay_seconds=_check_optional("max_delay_seconds", peer.max_delay_seconds),
        transfer_syntax=_check_transfer_syntax(peer.transfer_syntax),
        created_at=datetime.now(UTC),
    )
    if _row(session, slug) is not None:
        raise StorageError(f"peer {slug!r} already exists; choose another slug or use update")
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        raise StorageError(
            f"peer {slug!r} already exists; choose another slug or use update"
        ) from None
    return _record(row)


def get(session: Session, slug: str) -> PeerRecord | None:
    """Return the peer with this slug, or ``None``."""
    row = _row(session, slug)
    return None if row is None else _record(row)


#: built once and run on the table, not through the ORM: it runs on every association
#: (gateway.policy.admit), where loading ORM objects cost most of the look-up
_PEERS: Final = table_of(Peer)
_BY_AE_TITLE: Final = (select(_PEERS).where(_PEERS.c.ae_title == bindparam("ae_title"))
                       .order_by(_PEERS.c.slug))


def by_ae_title(session: Session, ae_title: str) -> list[PeerRecord]:
    """Return the peers registered under an AE title (padding spaces ignored).

    Used at association time (RELIABILITY.md T01, T02): the caller accepts
    a peer whose ``pinned_address`` is unset or equal to the caller's.
    """
    rows = session.execute(_BY_AE_TITLE, {"ae_title": ae_title.strip(" ")})
    return [_record(row) for row in rows]


def list_all(session: Session) -> list[PeerRecord]:
    """Return every peer, by slug."""
    rows = session.execute(
        select(Peer).order_by(Peer.slug).execution_options(populate_existing=True)
    ).scalars()
    return [_record(row) for row in rows]


def _routed_to(session: Session, slug: str) -> str:
    return ", ".join(routes_to(session, slug))


def remove(session: Session, slug: str) -> bool:
    """Remove a peer; ``False`` when there was none with this slug.

    Raises
    ------
    StorageError
        When a route sends to the peer (the routes are named).
    """
    if names := _routed_to(session, slug):
        raise StorageError(f"peer {slug!r} is a destination of route {names}; remove it "
                           "from there first (dicom-gateway route export, edit, import)")
    result = session.execute(delete(Peer).where(Peer.slug == slug))
    return bool(getattr(result, "rowcount", 0))


def update(session: Session, slug: str, /, **changes: Unpack[PeerChanges]) -> PeerRecord | None:
    """Change some of a peer's fields.

    Parameters
    ----------
    session : Session
        The caller's session.
    slug : str
        Which peer.
    **changes
        Any of ``ae_title``, ``host``, ``port``, ``roles``,
        ``pinned_address`` (``None`` unpins), ``scope``, ``schedule``,
        ``pseudonyms``, ``tls``, ``certificate_sha256`` (``None`` unpins),
        ``max_associations``, the retry policy's fields (``None``: the
        ``[forward]`` default) and ``transfer_syntax``, checked as in :func:`add`.

    Returns
    -------
    PeerRecord | None
        The peer as stored now, or ``None`` when there is no such peer.

    Raises
    ------
    StorageError
        When a value breaks its rule, a field is not one of the above, or
        the destination role is dropped while a route sends to the peer.
    """
    unknown = sorted(set(changes) - set(PeerChanges.__annotations__))
    if unknown:
        raise StorageError(f"peer update: cannot change {', '.join(unknown)}")
    row = _row(session, slug)
    if row is None:
        return None
    if "ae_title" in changes:
        row.ae_title = _check_ae_title(changes["ae_title"])
    if "host" in changes:
        row.host = _check_host(changes["host"])
    if "port" in changes:
        row.port = _check_port(changes["port"])
    if "roles" in changes:
        roles = _check_roles(changes["roles"])
        if "destination" not in roles and (names := _routed_to(session, slug)):
            raise StorageError(f"peer roles: expected destination among them, got "
                               f"{','.join(roles)}: route {names} sends to {slug!r}")
        row.roles = ",".join(roles)
    if "pinned_address" in changes:
        row.pinned_address = _check_address(changes["pinned_address"])
    if "scope" in changes:
        row.scope = _check_scope(changes["scope"])
    if "schedule" in changes:
        row.schedule = check_schedule(changes["schedule"])
    if "pseudonyms" in changes:
        row.pseudonyms = _check_pseudonyms(changes["pseudonyms"])
    if "tls" in changes:
        row.tls = bool(changes["tls"])
    if "certificate_sha256" in changes:
        row.certificate_sha256 = _check_fingerprint(changes["certificate_sha256"])
    if "max_associations" in changes:
        row.max_associations = _check_number("max_associations", changes["max_associations"])
    for field in POLICY_FIELDS:
        if field in changes:
            setattr(row, field, _check_optional(field, changes.get(field)))
    if "transfer_syntax" in changes:
        row.transfer_syntax = _check_transfer_syntax(changes["transfer_syntax"])
    session.flush()
    return _record(row)
