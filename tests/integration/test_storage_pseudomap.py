"""The pseudonym map: originals sealed at rest, opened only with the key (privacy model)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text, update

from storage import index, pseudomap
from storage.crypto import MapCipher
from storage.db import session_scope
from storage.errors import StorageError
from storage.models import MapKind, PseudonymMap
from storage.records import InstanceRecord, MapEntry
from tests.fixtures_db import instance_record

KEY = bytes(range(32))
CIPHER = MapCipher(KEY)
ORIGINAL_ID = "HOSPITAL-ID-884422"
ORIGINAL_STUDY_UID = "1.2.826.0.1.3680043.9.7777.1"
ORIGINAL_ACCESSION = "ACC-REAL-55901"
ORIGINAL_SOP_UID = "1.2.826.0.1.3680043.9.7777.1.1.1"


def _entries(record: InstanceRecord) -> list[MapEntry]:
    study = record.study_instance_uid
    return [
        MapEntry(MapKind.PATIENT, record.patient_id, ORIGINAL_ID, study),
        MapEntry(MapKind.STUDY, study, ORIGINAL_STUDY_UID, study),
        MapEntry(MapKind.ACCESSION, record.accession_number, ORIGINAL_ACCESSION, study),
        MapEntry(MapKind.STUDY_ID, record.study_id, "S-1", study),
        MapEntry(MapKind.UID, record.sop_instance_uid, ORIGINAL_SOP_UID, study),
    ]


@pytest.fixture
def indexed(engine: Engine) -> InstanceRecord:
    record = instance_record()
    with session_scope(engine) as session:
        assert index.add_instance(session, record, _entries(record), CIPHER).value == "added"
    return record


def test_originals_are_not_stored_in_plain(engine: Engine, indexed: InstanceRecord) -> None:
    with session_scope(engine, readonly=True) as session:
        sealed = session.execute(select(PseudonymMap.original_ciphertext)).scalars().all()
        dumped = session.execute(text("SELECT * FROM pseudonym_map")).all()
    assert len(sealed) == 5
    for value in sealed:
        for original in (ORIGINAL_ID, ORIGINAL_STUDY_UID, ORIGINAL_ACCESSION):
            assert original.encode() not in value
    as_text = repr(dumped)
    for original in (ORIGINAL_ID, ORIGINAL_STUDY_UID, ORIGINAL_ACCESSION, ORIGINAL_SOP_UID):
        assert original not in as_text
    if engine.dialect.name == "sqlite":
        database = Path(str(engine.url.database))
        raw = b"".join(path.read_bytes() for path in database.parent.iterdir() if path.is_file())
        assert indexed.patient_id.encode() in raw  # the search does see the file's contents
        for original in (ORIGINAL_ID, ORIGINAL_STUDY_UID, ORIGINAL_ACCESSION):
            assert original.encode() not in raw


def test_originals_for_study_decrypt_with_the_key(engine: Engine,
                                                  indexed: InstanceRecord) -> None:
    with session_scope(engine, readonly=True) as session:
        originals = pseudomap.originals_for_study(session, CIPHER, indexed.study_instance_uid)
        uids = pseudomap.uid_originals(session, CIPHER, indexed.study_instance_uid)
        unknown = pseudomap.originals_for_study(session, CIPHER, "2.25.404")
    assert originals == {"patient": ORIGINAL_ID, "study": ORIGINAL_STUDY_UID,
                         "accession": ORIGINAL_ACCESSION, "study_id": "S-1"}
    assert uids == {indexed.study_instance_uid: ORIGINAL_STUDY_UID,
                    indexed.sop_instance_uid: ORIGINAL_SOP_UID}
    assert unknown == {}


def test_a_second_study_of_the_patient_finds_the_patient_entry(
        engine: Engine, indexed: InstanceRecord) -> None:
    later = instance_record(patient_id=indexed.patient_id, accession_number="ACC-PSEUDO-2",
                            study_id="SID-PSEUDO-2")
    entries = [MapEntry(MapKind.ACCESSION, "ACC-PSEUDO-2", "ACC-REAL-2",
                        later.study_instance_uid)]
    with session_scope(engine) as session:
        index.add_instance(session, later, entries, CIPHER)
    with session_scope(engine, readonly=True) as session:
        originals = pseudomap.originals_for_study(session, CIPHER, later.study_instance_uid)
    assert originals == {"patient": ORIGINAL_ID, "accession": "ACC-REAL-2"}


def test_a_wrong_key_fails(engine: Engine, indexed: InstanceRecord) -> None:
    with session_scope(engine, readonly=True) as session:
        with pytest.raises(StorageError, match="wrong key"):
            pseudomap.originals_for_study(session, MapCipher(b"\x01" * 32),
                                          indexed.study_instance_uid)


def test_a_value_moved_to_another_row_does_not_open(engine: Engine,
                                                    indexed: InstanceRecord) -> None:
    with session_scope(engine) as session:
        patient = session.execute(
            select(PseudonymMap.original_ciphertext).where(PseudonymMap.kind == MapKind.PATIENT)
        ).scalar_one()
        session.execute(update(PseudonymMap).where(PseudonymMap.kind == MapKind.ACCESSION)
                        .values(original_ciphertext=patient))
    with session_scope(engine, readonly=True) as session:
        with pytest.raises(StorageError, match="cannot be opened"):
            pseudomap.originals_for_study(session, CIPHER, indexed.study_instance_uid)
