"""The index schema: SQLAlchemy 2 typed ORM, columns named after DICOM keywords.

Tables (STYLE.md sections 2 and 3; the contrast is legacy ``Column`` and
``session.query``):

``patient``, ``study``, ``series``, ``instance``
    The index of what has been stored, de-identified (ARCHITECTURE.md,
    privacy model): identifiers are pseudonyms, UIDs are the remapped ones.
``pseudonym_map``
    Pseudonym to original, the original encrypted (:mod:`storage.crypto`).
``peer``
    Remote AEs, their roles and what they may query (ARCHITECTURE.md, peers
    and access).
``audit``
    Append-only record of security-relevant events (RELIABILITY.md I5).
``quarantine``
    One row per spool file set aside, with its reason (RELIABILITY.md I2).
``route``, ``route_destination``
    Routing rules and the destination peers each sends to (ARCHITECTURE.md,
    routing and forwarding; :mod:`storage.routes`).

States and kinds are ``str`` Enums declared next to their table (STYLE.md
section 1). Every change to this module needs a migration in
``storage/migrations/versions``; a test compares the two.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "NAMING_CONVENTION",
    "AuditEntry",
    "AuditOutcome",
    "Base",
    "Instance",
    "MapKind",
    "Patient",
    "Peer",
    "PeerScope",
    "PseudonymMap",
    "QuarantineEntry",
    "Route",
    "RouteDestination",
    "Series",
    "Study",
    "StudyState",
    "UTCDateTime",
]

#: Constraint and index names, so that migrations can name them exactly.
NAMING_CONVENTION: Final = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

UID: Final = 64  # PS3.5 9.1: a UID is at most 64 characters
AE: Final = 16  # PS3.5 6.2: AE title, at most 16 characters
SHORT: Final = 64  # CS, DA, TM, SH, IS values and pseudonyms, with room for oddities


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on both databases.

    Values must be timezone-aware; they are stored in UTC (PostgreSQL
    ``timestamptz``; SQLite text without an offset) and always read back
    with ``tzinfo=UTC`` (RELIABILITY.md T30: audit times in UTC).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("expected a timezone-aware datetime, got a naive one")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _str_enum(kind: type[enum.Enum]) -> Enum:
    """A VARCHAR column holding an Enum's values (no database enum type)."""
    return Enum(
        kind,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class StudyState(str, enum.Enum):
    """Where a study stands: served and routed, or held for an administrator.

    ``quarantined`` follows the privacy model: instances flagged
    BurnedInAnnotation=YES or of a risky class are held until released.
    """

    ACTIVE = "active"
    QUARANTINED = "quarantined"


class MapKind(str, enum.Enum):
    """What a pseudonym replaces (ARCHITECTURE.md, privacy model).

    ``study`` maps the new StudyInstanceUID to the original; ``uid`` any
    other remapped UID needed to return results.
    """

    PATIENT = "patient"
    STUDY = "study"
    ACCESSION = "accession"
    STUDY_ID = "study_id"
    UID = "uid"


class PeerScope(str, enum.Enum):
    """Which studies a ``query``/``retrieve`` peer sees (ARCHITECTURE.md, peers and access).

    ``all``
        Every active study.
    ``sent``
        The studies this peer sent (``study.source_peer``); the default.
    ``routed``
        The studies routed to this peer: those with a forward job to it.
    """

    ALL = "all"
    SENT = "sent"
    ROUTED = "routed"


class AuditOutcome(str, enum.Enum):
    """The result of an audited action (RELIABILITY.md I5)."""

    SUCCESS = "success"
    FAILURE = "failure"


class Base(DeclarativeBase):
    """The declarative base; its metadata is what migrations must produce."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime()}


class Patient(Base):
    """One pseudonymous patient; the same pseudonym in every study.

    ``patient_name_folded`` is ``patient_name`` in lower case
    (:func:`storage.matching.fold`), written with it: C-FIND matches person
    names case-insensitively on it, through an index (PostgreSQL: with
    ``text_pattern_ops``, so that ``LIKE 'prefix%'`` uses it too).
    """

    __tablename__ = "patient"
    __table_args__ = (
        Index("ix_patient_patient_name_folded", "patient_name_folded",
              postgresql_ops={"patient_name_folded": "text_pattern_ops"}),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(SHORT), unique=True)
    patient_name: Mapped[str] = mapped_column(Text)
    patient_name_folded: Mapped[str] = mapped_column(Text, server_default="")
    patient_sex: Mapped[str] = mapped_column(String(SHORT))
    patient_birth_date: Mapped[str] = mapped_column(String(SHORT))


class Study(Base):
    """One study under its new StudyInstanceUID, with study-level counts.

    ``modalities_in_study`` and ``sop_classes_in_study`` are backslash-joined
    and sorted, the way PS3.4 C.6.1.1.4 returns multi-valued attributes.
    ``referring_physician_name_folded`` is the name in lower case, for
    case-insensitive matching (see :class:`Patient`). ``source_peer`` is
    indexed: a peer with scope ``sent`` sees the studies it sent.
    """

    __tablename__ = "study"
    __table_args__ = (
        Index("ix_study_study_date", "study_date"),
        Index("ix_study_accession_number", "accession_number"),
        Index("ix_study_patient_fk", "patient_fk"),
        Index("ix_study_last_received_at", "last_received_at"),
        Index("ix_study_source_peer", "source_peer"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_fk: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    study_instance_uid: Mapped[str] = mapped_column(String(UID), unique=True)
    study_date: Mapped[str] = mapped_column(String(SHORT))
    study_time: Mapped[str] = mapped_column(String(SHORT))
    accession_number: Mapped[str] = mapped_column(String(SHORT))
    study_id: Mapped[str] = mapped_column(String(SHORT))
    study_description: Mapped[str] = mapped_column(Text)
    referring_physician_name: Mapped[str] = mapped_column(Text)
    referring_physician_name_folded: Mapped[str] = mapped_column(Text, server_default="")
    modalities_in_study: Mapped[str] = mapped_column(Text)
    sop_classes_in_study: Mapped[str] = mapped_column(Text)
    number_of_study_related_series: Mapped[int] = mapped_column(Integer)
    number_of_study_related_instances: Mapped[int] = mapped_column(Integer)
    source_peer: Mapped[str | None] = mapped_column(String(SHORT))
    calling_ae_title: Mapped[str] = mapped_column(String(AE))
    first_received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: when the routes were last applied to it; None: never, or an instance was indexed
    #: since, so it is routed (again) once stable (storage.jobs.unrouted_stable)
    routed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    state: Mapped[StudyState] = mapped_column(_str_enum(StudyState))


class Series(Base):
    """One series of a study, with its instance count.

    ``(modality, study_fk)`` is indexed: ModalitiesInStudy matching is an
    ``EXISTS`` on this table, and a Modality key drives the query from it.
    """

    __tablename__ = "series"
    __table_args__ = (
        Index("ix_series_study_fk", "study_fk"),
        Index("ix_series_modality", "modality", "study_fk"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_fk: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"))
    series_instance_uid: Mapped[str] = mapped_column(String(UID), unique=True)
    modality: Mapped[str] = mapped_column(String(SHORT))
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str] = mapped_column(Text)
    body_part_examined: Mapped[str] = mapped_column(String(SHORT))
    number_of_series_related_instances: Mapped[int] = mapped_column(Integer)


class Instance(Base):
    """One stored, de-identified instance file.

    ``received_sha256`` is the digest of the bytes as received: the same
    bytes again are a no-op, different bytes under the same SOP Instance
    UID are a conflict (RELIABILITY.md T22). ``file_path`` is relative to
    the file store's root and never built from a peer's value (I3).
    """

    __tablename__ = "instance"
    __table_args__ = (Index("ix_instance_series_fk", "series_fk"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_fk: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    sop_instance_uid: Mapped[str] = mapped_column(String(UID), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(UID))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(UID))
    file_path: Mapped[str] = mapped_column(String(255))
    file_size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    received_sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    calling_ae_title: Mapped[str] = mapped_column(String(AE))
    source_peer: Mapped[str | None] = mapped_column(String(SHORT))


class Peer(Base):
    """A remote AE: slug for people, AE title for the network (STYLE.md section 3).

    ``scope`` says which studies it finds and retrieves (:class:`PeerScope`);
    the other columns are a destination's forwarding options (:mod:`storage.peers`).
    """

    __tablename__ = "peer"
    __table_args__ = (Index("ix_peer_ae_title", "ae_title"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(SHORT), unique=True)
    ae_title: Mapped[str] = mapped_column(String(AE))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    roles: Mapped[str] = mapped_column(String(SHORT))
    pinned_address: Mapped[str | None] = mapped_column(String(64))
    scope: Mapped[PeerScope] = mapped_column(
        _str_enum(PeerScope), server_default=PeerScope.SENT.value
    )
    #: when a destination may be sent to: ``immediate`` or a cron window (storage.schedule)
    schedule: Mapped[str] = mapped_column(Text, server_default="immediate")
    #: ``shared`` (the node's pseudonyms) or ``own`` (re-keyed for this destination)
    pseudonyms: Mapped[str] = mapped_column(String(16), server_default="shared")
    #: connect to this peer over DICOM TLS (gateway.tls)
    tls: Mapped[bool] = mapped_column(Boolean, server_default=false())
    #: SHA-256 of the client certificate this peer must present (lower-case hex), or None
    certificate_sha256: Mapped[str | None] = mapped_column(String(64))
    #: a destination's concurrent associations (jobs in ``sending``), across all nodes
    max_associations: Mapped[int] = mapped_column(Integer, server_default="1")
    #: a destination's retry policy; NULL: the ``[forward]`` default of that key
    max_attempts: Mapped[int | None] = mapped_column(Integer)
    first_delay_seconds: Mapped[int | None] = mapped_column(Integer)
    backoff_multiplier: Mapped[int | None] = mapped_column(Integer)
    max_delay_seconds: Mapped[int | None] = mapped_column(Integer)
    #: ``stored`` (as stored, uncompressed as a fallback) or ``uncompressed`` (always)
    transfer_syntax: Mapped[str] = mapped_column(String(16), server_default="stored")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PseudonymMap(Base):
    """Pseudonym to original; the original sealed with AES-GCM, never plain."""

    __tablename__ = "pseudonym_map"
    __table_args__ = (
        UniqueConstraint("kind", "pseudonym"),
        Index("ix_pseudonym_map_pseudonym", "pseudonym"),
        Index("ix_pseudonym_map_study_instance_uid", "study_instance_uid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[MapKind] = mapped_column(_str_enum(MapKind))
    pseudonym: Mapped[str] = mapped_column(String(SHORT))
    original_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    study_instance_uid: Mapped[str | None] = mapped_column(String(UID))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditEntry(Base):
    """One audited event. Append-only: nothing updates or deletes these rows."""

    __tablename__ = "audit"
    __table_args__ = (
        Index("ix_audit_at", "at"),
        Index("ix_audit_event", "event"),
        Index("ix_audit_study_instance_uid", "study_instance_uid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    event: Mapped[str] = mapped_column(String(SHORT))
    actor: Mapped[str] = mapped_column(String(SHORT))
    outcome: Mapped[AuditOutcome] = mapped_column(_str_enum(AuditOutcome))
    study_instance_uid: Mapped[str | None] = mapped_column(String(UID))
    detail: Mapped[str] = mapped_column(Text)


class QuarantineEntry(Base):
    """A spool file set aside with its reason, until released."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    spool_name: Mapped[str] = mapped_column(String(128), unique=True)
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    calling_ae_title: Mapped[str] = mapped_column(String(AE))
    sop_instance_uid: Mapped[str | None] = mapped_column(String(UID))
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Route(Base):
    """A routing rule: conditions on a study's attributes and where it goes.

    Routes are evaluated in ascending ``priority``, then by ``name``.
    ``conditions`` is a JSON array of ``KEYWORD=PATTERN`` strings in the order
    given (all must match); the destinations are rows of
    :class:`RouteDestination`. :mod:`storage.routes` validates both.
    """

    __tablename__ = "route"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(SHORT), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    priority: Mapped[int] = mapped_column(Integer)
    conditions: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RouteDestination(Base):
    """One destination peer of a route, in the order given.

    The peer is referenced by id, so a peer that a route sends to cannot be
    removed while the route names it; removing the route removes these rows.
    """

    __tablename__ = "route_destination"
    __table_args__ = (Index("ix_route_destination_peer_fk", "peer_fk"),)

    route_fk: Mapped[int] = mapped_column(
        ForeignKey("route.id", ondelete="CASCADE"), primary_key=True
    )
    peer_fk: Mapped[int] = mapped_column(ForeignKey("peer.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
