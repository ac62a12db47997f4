"""The durable half of the node: database, file store and spool.

It stores bytes and typed records and never parses DICOM (STYLE.md section
2: imports config, SQLAlchemy, Alembic, cryptography and the standard
library only; never pydicom or pynetdicom).

Modules, one job each:

``db``          engine and ``session_scope`` (SQLite or PostgreSQL)
``schema``      Alembic migrations run from code: ``upgrade``, ``current``
``models``      the ORM tables; ``records`` the frozen values that cross over
``index``       add an instance, delete or re-state a study (``studies``: read)
``pseudomap``   sealed originals behind pseudonyms (``crypto``: the cipher)
``matching``    PS3.4 C.2.2.2 matching values parsed from text (no DICOM library)
``conditions``  one match as an SQL condition; ``search`` a whole C-FIND query
``peers``, ``audit``, ``quarantine``   what the CLI administers and lists
``nodes``       each node's spool backlog, for the stability sweep
``jobs``        the forward queue; ``commitments`` Storage Commitment results;
                ``cases`` consultation cases and their results
``filestore``   write-once de-identified files; ``spool`` received originals
"""

from .case_models import CaseState  # registers the consultation cases' tables
from .commitment_models import StorageCommitment  # registers the commitment table
from .crypto import MapCipher
from .db import make_engine, session_scope
from .errors import StorageError, StorageFull
from .filestore import FileStore, StoredFile
from .index import AddOutcome
from .models import AuditOutcome, MapKind, PeerScope, StudyState
from .nodes import NodeSpool  # registers the spool reports' table
from .queue_models import ItemState, JobKind, JobState  # registers the queue's tables
from .records import (
    AuditEvent,
    InstanceRecord,
    MapEntry,
    PeerRecord,
    QuarantineRecord,
    SeriesSummary,
    StudyDetail,
    StudySummary,
)
from .schema import current, head, upgrade
from .spool import Spool, SpoolEntry, SpoolMeta

__all__ = [
    "AddOutcome",
    "AuditEvent",
    "AuditOutcome",
    "CaseState",
    "FileStore",
    "InstanceRecord",
    "ItemState",
    "JobKind",
    "JobState",
    "MapCipher",
    "MapEntry",
    "MapKind",
    "NodeSpool",
    "PeerRecord",
    "PeerScope",
    "QuarantineRecord",
    "SeriesSummary",
    "Spool",
    "SpoolEntry",
    "SpoolMeta",
    "StorageCommitment",
    "StorageError",
    "StorageFull",
    "StoredFile",
    "StudyDetail",
    "StudyState",
    "StudySummary",
    "current",
    "head",
    "make_engine",
    "session_scope",
    "upgrade",
]
