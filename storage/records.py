"""The typed values that cross the storage boundary (STYLE.md sections 1 and 2).

Callers hand the storage layer frozen dataclasses and get frozen dataclasses
back; no ORM object leaves :mod:`storage`. Field names are DICOM keywords in
snake_case (STYLE.md section 3). Every identifying field here already holds
the de-identified value: a pseudonym, a remapped UID, a shifted or emptied
date (ARCHITECTURE.md, privacy model); only :class:`MapEntry.original` holds
an original, and it is sealed before it is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .models import AuditOutcome, MapKind, PeerScope, StudyState

__all__ = [
    "AuditEvent",
    "InstanceRecord",
    "MapEntry",
    "PeerRecord",
    "QuarantineRecord",
    "SeriesSummary",
    "StudyDetail",
    "StudySummary",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceRecord:
    """Everything needed to index one stored, de-identified instance.

    ``file_path``, ``file_size`` and ``sha256`` come from
    :meth:`storage.filestore.FileStore.write`; ``received_sha256`` is the
    digest of the bytes as the peer sent them (the idempotency key together
    with ``sop_instance_uid``, RELIABILITY.md T22). ``received_at`` is
    timezone-aware.
    """

    patient_id: str
    patient_name: str
    patient_sex: str
    patient_birth_date: str
    study_instance_uid: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician_name: str
    series_instance_uid: str
    modality: str
    series_number: int | None
    series_description: str
    body_part_examined: str
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    transfer_syntax_uid: str
    file_path: str
    file_size: int
    sha256: str
    received_sha256: str
    received_at: datetime
    calling_ae_title: str
    source_peer: str | None


@dataclass(frozen=True, slots=True)
class MapEntry:
    """One pseudonym and the original it replaces, for the pseudonym map.

    ``study_instance_uid`` is the new StudyInstanceUID the entry was first
    seen in (``None`` when it belongs to no study).
    """

    kind: MapKind
    pseudonym: str
    original: str
    study_instance_uid: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StudySummary:
    """One line of ``study list`` (STYLE.md section 4)."""

    study_instance_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    study_description: str
    modalities_in_study: tuple[str, ...]
    number_of_study_related_series: int
    number_of_study_related_instances: int
    source_peer: str | None
    calling_ae_title: str
    state: StudyState
    last_received_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class SeriesSummary:
    """One series of a study, with its instance count."""

    series_instance_uid: str
    modality: str
    series_number: int | None
    series_description: str
    body_part_examined: str
    number_of_series_related_instances: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StudyDetail:
    """``study show``: the study's indexed attributes and its series."""

    study_instance_uid: str
    patient_id: str
    patient_name: str
    patient_sex: str
    patient_birth_date: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician_name: str
    modalities_in_study: tuple[str, ...]
    sop_classes_in_study: tuple[str, ...]
    number_of_study_related_series: int
    number_of_study_related_instances: int
    source_peer: str | None
    calling_ae_title: str
    state: StudyState
    first_received_at: datetime
    last_received_at: datetime
    series: tuple[SeriesSummary, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerRecord:
    """A remote AE as the administrator registers it (ARCHITECTURE.md, peers).

    ``roles`` is a subset of :data:`storage.peers.ROLES`; ``pinned_address``
    (an IP address) restricts associations claiming this AE title to that
    address; ``schedule`` is when a destination may be sent to
    (:mod:`storage.schedule`); ``scope`` is which studies it finds and retrieves
    (:class:`~storage.models.PeerScope`); ``tls`` says the node connects to it
    over DICOM TLS, and ``certificate_sha256`` pins the client certificate it
    must present when it connects. ``created_at`` is set by the database.
    (:class:`~storage.models.PeerScope`). A destination's forwarding options:
    ``max_associations`` (jobs sent to it at once, across all nodes), its retry
    policy (``max_attempts``, ``first_delay_seconds``, ``backoff_multiplier``,
    ``max_delay_seconds``; ``None`` takes the ``[forward]`` default of that
    key) and ``transfer_syntax`` (:data:`storage.peers.TRANSFER_SYNTAXES`).
    ``created_at`` is set by the database.
    """

    slug: str
    ae_title: str
    host: str
    port: int
    roles: tuple[str, ...]
    pinned_address: str | None = None
    scope: PeerScope = PeerScope.SENT
    schedule: str = "immediate"
    pseudonyms: str = "shared"
    tls: bool = False
    certificate_sha256: str | None = None
    max_associations: int = 1
    max_attempts: int | None = None
    first_delay_seconds: int | None = None
    backoff_multiplier: int | None = None
    max_delay_seconds: int | None = None
    transfer_syntax: str = "stored"
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """One audit record (RELIABILITY.md I5); ``detail`` never holds PHI."""

    id: int
    at: datetime
    event: str
    actor: str
    outcome: AuditOutcome
    study_instance_uid: str | None
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class QuarantineRecord:
    """A spool file set aside (RELIABILITY.md I2), and whether it was released."""

    id: int
    spool_name: str
    reason: str
    at: datetime
    calling_ae_title: str
    sop_instance_uid: str | None
    released_at: datetime | None
