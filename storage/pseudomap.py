"""The pseudonym map: pseudonym to original, sealed, for re-identifying one study.

ARCHITECTURE.md, privacy model: the map lets an administrator re-identify one
study, every such look-up is audited (the caller writes the audit record in
the same transaction), and originals are sealed with AES-GCM
(:class:`storage.crypto.MapCipher`) under a key kept outside the database.
Each sealed value is bound to its ``kind:pseudonym`` so it cannot be moved
onto another row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from ._sql import insert_ignore, table_of
from .crypto import MapCipher
from .errors import StorageError
from .models import SHORT, UID, MapKind, Patient, PseudonymMap, Study
from .records import MapEntry

__all__ = ["add_entries", "originals_for_study", "originals_of_uids", "uid_originals"]

#: Kinds with one value per study, as returned by :func:`originals_for_study`.
_STUDY_KINDS = (MapKind.PATIENT, MapKind.STUDY, MapKind.ACCESSION, MapKind.STUDY_ID)


def _context(kind: MapKind, pseudonym: str) -> bytes:
    return f"{kind.value}:{pseudonym}".encode()


def add_entries(session: Session, entries: Sequence[MapEntry], cipher: MapCipher) -> int:
    """Record map entries whose ``(kind, pseudonym)`` is not yet known.

    Idempotent: an entry already present is left as it is (the first
    original wins). Runs in the caller's transaction; rows are written in
    ``(kind, pseudonym)`` order, so concurrent writers lock them in the same
    order on PostgreSQL.

    Parameters
    ----------
    session : Session
        The caller's session.
    entries : Sequence[MapEntry]
        The pseudonyms made for one instance.
    cipher : MapCipher
        Seals each original.

    Returns
    -------
    int
        How many entries were new.

    Raises
    ------
    StorageError
        When a kind is unknown or a pseudonym is empty or too long.
    """
    unique: dict[tuple[MapKind, str], MapEntry] = {}
    for entry in entries:
        try:
            kind = MapKind(entry.kind)
        except ValueError:
            raise StorageError(
                f"map entry kind: expected one of {[k.value for k in MapKind]}, got {entry.kind!r}"
            ) from None
        if not entry.pseudonym or len(entry.pseudonym) > SHORT:
            raise StorageError(f"map entry pseudonym: expected 1-{SHORT} characters")
        if entry.study_instance_uid is not None and len(entry.study_instance_uid) > UID:
            raise StorageError(f"map entry study_instance_uid: expected at most {UID} characters")
        unique.setdefault((kind, entry.pseudonym), entry)
    now = datetime.now(UTC)
    rows = [
        {
            "kind": kind,
            "pseudonym": pseudonym,
            "original_ciphertext": cipher.seal(
                entry.original, associated=_context(kind, pseudonym)
            ),
            "study_instance_uid": entry.study_instance_uid,
            "created_at": now,
        }
        for (kind, pseudonym), entry in sorted(unique.items(), key=lambda item: (
            item[0][0].value, item[0][1]))
    ]
    return len(insert_ignore(session, table_of(PseudonymMap), rows, ("kind", "pseudonym")))


def originals_for_study(
    session: Session, cipher: MapCipher, study_instance_uid: str
) -> dict[str, str]:
    """Return the originals behind one study's pseudonyms, for ``study reidentify``.

    Looks up the study's patient, study, accession and study-ID pseudonyms
    (from the index when the study is there, and from entries first seen in
    this study otherwise). The caller audits the look-up (RELIABILITY.md I5).

    Parameters
    ----------
    session : Session
        The caller's session.
    cipher : MapCipher
        Holds the key the originals were sealed with.
    study_instance_uid : str
        The new (remapped) StudyInstanceUID.

    Returns
    -------
    dict[str, str]
        ``{kind: original}`` for kinds ``patient``, ``study`` (the original
        StudyInstanceUID), ``accession`` and ``study_id``, as far as known;
        empty for an unknown study.

    Raises
    ------
    StorageError
        When the key is not the one the originals were sealed with.
    """
    wanted = [
        and_(PseudonymMap.study_instance_uid == study_instance_uid,
             PseudonymMap.kind.in_(_STUDY_KINDS)),
    ]
    row = session.execute(
        select(Patient.patient_id, Study.accession_number, Study.study_id)
        .join(Patient, Study.patient_fk == Patient.id)
        .where(Study.study_instance_uid == study_instance_uid)
    ).one_or_none()
    if row is not None:
        pairs = [
            (MapKind.PATIENT, row.patient_id),
            (MapKind.STUDY, study_instance_uid),
            (MapKind.ACCESSION, row.accession_number),
            (MapKind.STUDY_ID, row.study_id),
        ]
        wanted += [
            and_(PseudonymMap.kind == kind, PseudonymMap.pseudonym == pseudonym)
            for kind, pseudonym in pairs
            if pseudonym
        ]
    found = session.execute(
        select(PseudonymMap.kind, PseudonymMap.pseudonym, PseudonymMap.original_ciphertext)
        .where(or_(*wanted))
        .order_by(PseudonymMap.id)
    ).all()
    originals: dict[str, str] = {}
    for kind, pseudonym, sealed in found:
        originals.setdefault(kind.value, cipher.open(sealed, associated=_context(kind, pseudonym)))
    return originals


def uid_originals(
    session: Session, cipher: MapCipher, study_instance_uid: str
) -> dict[str, str]:
    """Return original UIDs by new UID for the UIDs first seen in one study.

    Parameters
    ----------
    session : Session
        The caller's session.
    cipher : MapCipher
        Holds the key the originals were sealed with.
    study_instance_uid : str
        The new (remapped) StudyInstanceUID.

    Returns
    -------
    dict[str, str]
        ``{new UID: original UID}`` for map kinds ``study`` and ``uid``.

    Raises
    ------
    StorageError
        When the key is not the one the originals were sealed with.
    """
    found = session.execute(
        select(PseudonymMap.kind, PseudonymMap.pseudonym, PseudonymMap.original_ciphertext)
        .where(PseudonymMap.study_instance_uid == study_instance_uid,
               PseudonymMap.kind.in_((MapKind.STUDY, MapKind.UID)))
    ).all()
    return {
        pseudonym: cipher.open(sealed, associated=_context(kind, pseudonym))
        for kind, pseudonym, sealed in found
    }


def originals_of_uids(
    session: Session, cipher: MapCipher, uids: Sequence[str]
) -> dict[str, str]:
    """Return original UIDs by new UID for the given new UIDs, whatever study they came in.

    A UID first seen in another study of the patient (a frame of reference
    shared by two studies) is found here, where :func:`uid_originals` only
    knows a study's own. The caller audits the look-up.
    """
    found: dict[str, str] = {}
    wanted = sorted(set(uids))
    for start in range(0, len(wanted), 500):
        rows = session.execute(
            select(PseudonymMap.kind, PseudonymMap.pseudonym, PseudonymMap.original_ciphertext)
            .where(PseudonymMap.kind.in_((MapKind.STUDY, MapKind.UID)),
                   PseudonymMap.pseudonym.in_(wanted[start:start + 500]))
        ).all()
        for kind, pseudonym, sealed in rows:
            found[pseudonym] = cipher.open(sealed, associated=_context(kind, pseudonym))
    return found
