"""UID replacement, pseudonyms, date shifting and identifier matching."""

from __future__ import annotations

import re

import pytest

from anonymizer import KeyedPseudonyms, PatientKey
from anonymizer.dates import shift_date, shift_date_time, shift_datetime, shift_time
from anonymizer.identifiers import Identifiers
from anonymizer.uids import UidMap, is_well_known


def test_uid_replacement_is_consistent_keyed_and_in_2_25_form() -> None:
    first, again, other = UidMap(b"k1"), UidMap(b"k1"), UidMap(b"k2")
    uid = "1.2.826.0.1.3680043.10.543.1"
    assert first.remap(uid) == again.remap(uid)
    assert first.remap(uid) != other.remap(uid)
    assert re.fullmatch(r"2\.25\.[1-9]\d{0,38}", first.remap(uid))
    assert first.remap(uid + "2") != first.remap(uid)
    assert first.mapping == {uid: first.remap(uid), uid + "2": first.remap(uid + "2")}


@pytest.mark.parametrize(
    "uid",
    ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.4.50", "2.16.840.1.113883.6.96"],
)
def test_well_known_uids_are_never_replaced(uid: str) -> None:
    assert is_well_known(uid)
    assert UidMap(b"k").remap(uid) == uid


def test_same_patient_same_pseudonym_and_different_patients_differ() -> None:
    space = KeyedPseudonyms(b"secret", prefix="ANON")
    a = space.patient(PatientKey("HOSP", "PID-1"))
    assert a == space.patient(PatientKey("HOSP", " PID-1 "))
    assert a != space.patient(PatientKey("OTHER", "PID-1"))  # issuer is part of the key
    assert a.patient_id != space.patient(PatientKey("HOSP", "PID-2")).patient_id
    assert a != KeyedPseudonyms(b"another secret").patient(PatientKey("HOSP", "PID-1"))
    assert a.patient_id.startswith("ANON") and len(a.patient_id) == 20
    assert -3650 - 365 < a.day_offset <= -365
    assert 3600 <= a.second_offset <= 86400 - 3600


def test_patients_without_id_are_told_apart_by_name_and_birth_date() -> None:
    space = KeyedPseudonyms(b"secret")
    one = space.patient(PatientKey("", "", "DOE^JANE|19500101"))
    two = space.patient(PatientKey("", "", "DOE^JANE|19600101"))
    assert one != two


def test_date_and_time_shifts_keep_format_and_intervals() -> None:
    assert shift_date("20240301", -1) == "20240229"
    assert shift_date("2024.03.01", -1) == "20240229"  # ACR-NEMA spelling
    assert shift_date("not a date", 5) is None
    assert shift_time("235930.123", 60) == "000030.123"
    assert shift_time("1015", 3600) == "1115"
    assert shift_time("25", 1) is None
    assert shift_datetime("20240301120000.5+0100", -1, 3600) == "20240229130000.5+0100"
    assert shift_datetime("2024", -400, 0) == "2023"
    assert shift_date_time("20240301", "233000", 0, 3600) == ("20240302", "003000")


def test_identifiers_match_whole_words_case_insensitively() -> None:
    ids = Identifiers.build(
        [("PatientName", "name", "LI^MING"), ("PatientID", "id", "PID-77"),
         ("PatientBirthDate", "date", "19510304"),
         ("InstitutionName", "text", "FAKE  GENERAL HOSPITAL")]
    )
    assert ids.scrub("CT liver of Li Ming, id pid-77") == "CT liver of , id"
    assert ids.first_hit("LIVER") is None
    assert ids.first_hit("born 04.03.1951") == "PatientBirthDate"
    assert ids.first_hit("seen at Fake General\tHospital") == "InstitutionName"
    assert ids.first_hit("PID-777") is None
