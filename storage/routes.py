"""Routes: the rules that send a study to consulting institutes, and the facts they read.

ARCHITECTURE.md, routing and forwarding. A route has a name (a slug, like a
peer's), an enabled flag, a priority, one or more destinations and an
ordered list of conditions (:mod:`storage.rules`). Routes are evaluated in
ascending priority, then by name; every enabled route whose conditions all
match contributes its destinations. Destinations are peers that exist and
have the ``destination`` role; they are stored as ``route_destination`` rows
(the peer by id, in the order given), the conditions as a JSON array of
``KEYWORD=PATTERN`` strings. Every value is checked here, with a message
naming the field, the value and the rule (``route <field>: ...``).

Changing a route never re-sends what was delivered: the forward queue keys
its jobs by study and destination, and routes are only read when a study
becomes stable. :func:`study_facts` reads what conditions are evaluated on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TypedDict, Unpack

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .errors import StorageError
from .models import Patient, Peer, Route, RouteDestination, Series, Study
from .rules import KEYWORDS, Level, StudyFacts, parse_condition

__all__ = [
    "DEFAULT_PRIORITY", "RouteChanges", "RouteRecord", "RouteSpec", "SyncReport", "add",
    "check", "get", "list_all", "remove", "routes_to", "study_facts", "sync", "update",
]

#: The priority of a route added without one.
DEFAULT_PRIORITY: Final = 100
#: The role a peer needs to be a destination (:data:`storage.peers.ROLES`).
DESTINATION_ROLE: Final = "destination"

_NAME: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_PRIORITY: Final = (-(2**31), 2**31 - 1)  # a 32-bit INTEGER on both databases


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteSpec:
    """A route as an administrator writes it (``route add``, an imported file)."""

    name: str
    destinations: tuple[str, ...]
    conditions: tuple[str, ...] = ()
    priority: int = DEFAULT_PRIORITY
    enabled: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteRecord:
    """A route as stored: conditions in canonical form, destinations in order."""

    name: str
    enabled: bool
    priority: int
    destinations: tuple[str, ...]
    conditions: tuple[str, ...]
    created_at: datetime
    updated_at: datetime

    def spec(self) -> RouteSpec:
        """The definition alone, without the times (what an export holds)."""
        return RouteSpec(name=self.name, destinations=self.destinations,
                         conditions=self.conditions, priority=self.priority, enabled=self.enabled)


class RouteChanges(TypedDict, total=False):
    """The fields :func:`update` may change (the name never changes)."""

    enabled: bool
    priority: int
    conditions: Iterable[str]
    destinations: Iterable[str]


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What :func:`sync` did: route names, and for each changed one its fields."""

    added: tuple[str, ...] = ()
    changed: tuple[tuple[str, tuple[str, ...]], ...] = ()
    removed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise StorageError(f"route name: expected 1-63 characters a-z, 0-9 and '-', starting "
                           f"with a letter or digit, got {name!r}")
    return name


def _check_priority(priority: int) -> int:
    low, high = _PRIORITY
    if isinstance(priority, bool) or not isinstance(priority, int) or not low <= priority <= high:
        raise StorageError(f"route priority: expected an integer {low} to {high}, "
                           f"got {priority!r}")
    return priority


def _check_enabled(enabled: bool) -> bool:
    if not isinstance(enabled, bool):
        raise StorageError(f"route enabled: expected true or false, got {enabled!r}")
    return enabled


def _check_conditions(conditions: Iterable[str]) -> tuple[str, ...]:
    if isinstance(conditions, str):
        conditions = [conditions]
    return tuple(parse_condition(text).text for text in conditions)


def _check_destinations(session: Session, slugs: Iterable[str]) -> list[Peer]:
    given = [slugs] if isinstance(slugs, str) else list(slugs)
    wanted = list(dict.fromkeys(given))
    if not wanted:
        raise StorageError("route destinations: expected one or more peer slugs with the "
                           "destination role, got none")
    rows = {row.slug: row for row in session.execute(
        select(Peer).where(Peer.slug.in_([str(slug) for slug in wanted]))
        .execution_options(populate_existing=True)).scalars()}
    for slug in wanted:
        row = rows.get(slug)
        if row is None:
            raise StorageError(f"route destinations: expected a registered peer, got {slug!r}; "
                               "see: dicom-gateway peer list")
        roles = row.roles.split(",")
        if DESTINATION_ROLE not in roles:
            raise StorageError(
                f"route destinations: expected a peer with the destination role, got {slug!r} "
                f"(roles {','.join(roles)}); add it with: dicom-gateway peer update {slug} "
                f"--role {' --role '.join([*roles, DESTINATION_ROLE])}")
    return [rows[slug] for slug in wanted]


def check(session: Session, spec: RouteSpec) -> RouteSpec:
    """Check every value of ``spec`` without writing; return it in canonical form.

    Raises
    ------
    StorageError
        When a value breaks its rule (``route <field>: expected ..., got ...``).
    """
    _check_name(spec.name)
    peers = _check_destinations(session, spec.destinations)
    return RouteSpec(name=spec.name, destinations=tuple(peer.slug for peer in peers),
                     conditions=_check_conditions(spec.conditions),
                     priority=_check_priority(spec.priority), enabled=_check_enabled(spec.enabled))


def _row(session: Session, name: str) -> Route | None:
    return session.execute(
        select(Route).where(Route.name == name).execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _records(session: Session, rows: Sequence[Route]) -> list[RouteRecord]:
    slugs: dict[int, list[str]] = {row.id: [] for row in rows}
    if slugs:
        for route_fk, slug in session.execute(
            select(RouteDestination.route_fk, Peer.slug)
            .join(Peer, Peer.id == RouteDestination.peer_fk)
            .where(RouteDestination.route_fk.in_(list(slugs)))
            .order_by(RouteDestination.route_fk, RouteDestination.position)
        ):
            slugs[route_fk].append(slug)
    return [RouteRecord(name=row.name, enabled=row.enabled, priority=row.priority,
                        destinations=tuple(slugs[row.id]),
                        conditions=tuple(json.loads(row.conditions)),
                        created_at=row.created_at, updated_at=row.updated_at)
            for row in rows]


def _set_destinations(session: Session, row: Route, peers: Sequence[Peer]) -> None:
    session.execute(delete(RouteDestination).where(RouteDestination.route_fk == row.id))
    session.add_all(RouteDestination(route_fk=row.id, peer_fk=peer.id, position=position)
                    for position, peer in enumerate(peers))
    session.flush()


def add(session: Session, spec: RouteSpec) -> RouteRecord:
    """Add a route.

    Parameters
    ----------
    session : Session
        The caller's session.
    spec : RouteSpec
        The route; every value is checked (:func:`check`).

    Returns
    -------
    RouteRecord
        As stored.

    Raises
    ------
    StorageError
        When a value breaks its rule, a destination is not a registered
        peer with the destination role, or the name is taken.
    """
    name = _check_name(spec.name)
    peers = _check_destinations(session, spec.destinations)
    now = datetime.now(UTC)
    row = Route(name=name, enabled=_check_enabled(spec.enabled),
                priority=_check_priority(spec.priority),
                conditions=json.dumps(list(_check_conditions(spec.conditions))),
                created_at=now, updated_at=now)
    taken = StorageError(f"route name: {name!r} already exists; choose another name, or "
                         "change it with enable, disable or import")
    if _row(session, name) is not None:
        raise taken
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        raise taken from None
    _set_destinations(session, row, peers)
    return _records(session, [row])[0]


def get(session: Session, name: str) -> RouteRecord | None:
    """Return the route with this name, or ``None``."""
    row = _row(session, name)
    return None if row is None else _records(session, [row])[0]


def list_all(session: Session) -> list[RouteRecord]:
    """Return every route in evaluation order: ascending priority, then name."""
    rows = session.execute(
        select(Route).order_by(Route.priority, Route.name)
        .execution_options(populate_existing=True)
    ).scalars().all()
    return _records(session, rows)


def remove(session: Session, name: str) -> bool:
    """Remove a route and its destination rows; ``False`` when there was none."""
    row = _row(session, name)
    if row is None:
        return False
    session.execute(delete(RouteDestination).where(RouteDestination.route_fk == row.id))
    session.execute(delete(Route).where(Route.id == row.id))
    return True


def update(session: Session, name: str, /,
           **changes: Unpack[RouteChanges]) -> RouteRecord | None:
    """Change some of a route's fields; ``updated_at`` moves only when one changes.

    Parameters
    ----------
    session : Session
        The caller's session.
    name : str
        Which route.
    **changes
        Any of ``enabled``, ``priority``, ``conditions`` (replacing all of
        them), ``destinations`` (replacing all of them), checked as in
        :func:`add`.

    Returns
    -------
    RouteRecord | None
        The route as stored now, or ``None`` when there is no such route.

    Raises
    ------
    StorageError
        When a value breaks its rule or a field is not one of the above.
    """
    unknown = sorted(set(changes) - set(RouteChanges.__annotations__))
    if unknown:
        raise StorageError(f"route update: cannot change {', '.join(unknown)}; expected "
                           f"{', '.join(RouteChanges.__annotations__)}")
    row = _row(session, name)
    if row is None:
        return None
    before = _records(session, [row])[0]
    if "enabled" in changes:
        row.enabled = _check_enabled(changes["enabled"])
    if "priority" in changes:
        row.priority = _check_priority(changes["priority"])
    if "conditions" in changes:
        row.conditions = json.dumps(list(_check_conditions(changes["conditions"])))
    if "destinations" in changes:
        peers = _check_destinations(session, changes["destinations"])
        if tuple(peer.slug for peer in peers) != before.destinations:
            _set_destinations(session, row, peers)
    after = _records(session, [row])[0]
    if after.spec() != before.spec():
        row.updated_at = datetime.now(UTC)
    session.flush()
    return _records(session, [row])[0]


def _differences(old: RouteSpec, new: RouteSpec) -> tuple[str, ...]:
    return tuple(name for name in ("enabled", "priority", "destinations", "conditions")
                 if getattr(old, name) != getattr(new, name))


def sync(session: Session, specs: Sequence[RouteSpec], *, replace: bool = False) -> SyncReport:
    """Make the stored routes match ``specs``: check all of them, then write.

    Parameters
    ----------
    session : Session
        The caller's session; its transaction holds every change, so a
        failure leaves the routes as they were.
    specs : Sequence[RouteSpec]
        The routes wanted; names must be unique.
    replace : bool
        Also remove the stored routes that ``specs`` does not name.

    Returns
    -------
    SyncReport
        The names added, changed (with their fields), removed and unchanged.

    Raises
    ------
    StorageError
        With one ``route <name>: ...`` part per problem, before anything is
        written.
    """
    problems: list[str] = []
    checked: list[RouteSpec] = []
    seen: set[str] = set()
    for spec in specs:
        label = spec.name if isinstance(spec.name, str) else repr(spec.name)
        if spec.name in seen:
            problems.append(f"route {label}: named twice")
            continue
        seen.add(spec.name)
        try:
            checked.append(check(session, spec))
        except StorageError as exc:
            problems.append(f"route {label}: {str(exc).removeprefix('route ')}")
    if problems:
        raise StorageError("; ".join(problems))
    stored = {record.name: record for record in list_all(session)}
    added: list[str] = []
    changed: list[tuple[str, tuple[str, ...]]] = []
    unchanged: list[str] = []
    for spec in checked:
        old = stored.get(spec.name)
        if old is None:
            add(session, spec)
            added.append(spec.name)
        elif fields := _differences(old.spec(), spec):
            update(session, spec.name, enabled=spec.enabled, priority=spec.priority,
                   conditions=spec.conditions, destinations=spec.destinations)
            changed.append((spec.name, fields))
        else:
            unchanged.append(spec.name)
    removed = sorted(set(stored) - seen) if replace else []
    for name in removed:
        remove(session, name)
    return SyncReport(tuple(added), tuple(changed), tuple(removed), tuple(unchanged))


def routes_to(session: Session, slug: str) -> list[str]:
    """The names of the routes that send to the peer ``slug``, by name."""
    return list(session.execute(
        select(Route.name).join(RouteDestination, RouteDestination.route_fk == Route.id)
        .join(Peer, Peer.id == RouteDestination.peer_fk).where(Peer.slug == slug)
        .order_by(Route.name)).scalars())


def study_facts(session: Session, study_instance_uid: str) -> StudyFacts | None:
    """Read what route conditions see of one study: one query for it, one for its series.

    Parameters
    ----------
    session : Session
        The caller's session.
    study_instance_uid : str
        The study's (remapped) StudyInstanceUID.

    Returns
    -------
    StudyFacts | None
        Every keyword of :data:`storage.rules.KEYWORDS` with its values
        (series-level ones distinct and sorted, empty ones left out), or
        ``None`` when the index has no such study.
    """
    own = {name: spec for name, spec in KEYWORDS.items() if spec.level is not Level.SERIES}
    columns = [getattr(Patient if spec.level is Level.PATIENT else Study, spec.column)
               .label(name) for name, spec in own.items()]
    row = session.execute(
        select(Study.id, Study.state, *columns).join(Patient, Patient.id == Study.patient_fk)
        .where(Study.study_instance_uid == study_instance_uid)
    ).mappings().one_or_none()
    if row is None:
        return None
    values: dict[str, tuple[str, ...]] = {}
    for name, spec in own.items():
        value = "" if row[name] is None else str(row[name])
        parts = value.split("\\") if spec.multi else [value]
        values[name] = tuple(sorted({part for part in parts if part}))
    several = {name: spec for name, spec in KEYWORDS.items() if spec.level is Level.SERIES}
    series = session.execute(
        select(*[getattr(Series, spec.column).label(name) for name, spec in several.items()])
        .where(Series.study_fk == row["id"])
    ).mappings().all()
    for name in several:
        found = {"" if item[name] is None else str(item[name]) for item in series}
        values[name] = tuple(sorted(found - {""}, key=_natural))
    state = row["state"]
    return StudyFacts(study_instance_uid=study_instance_uid,
                      state=str(getattr(state, "value", state)), values=values)


def _natural(value: str) -> tuple[int, str]:
    """Sort key: numbers by value (series numbers, counts), then text."""
    return (int(value), "") if value.isdigit() else (1 << 62, value)
