"""Keyed patient pseudonyms and per-patient date offsets.

The patient is identified by IssuerOfPatientID plus PatientID (falling back
to name and birth date when the ID is empty). An HMAC-SHA256 of that key
under a secret gives the pseudonym PatientID and PatientName and the offset
by which this patient's dates and times are shifted (PS3.15 E.3.6, Retain
Longitudinal Temporal Information with Modified Dates: intervals between a
patient's dates are preserved). The same patient gets the same pseudonym in
every study; two patients collide with probability 2**-80. The secret never
enters the database or the config file.

The engine asks a :class:`PseudonymLookup` rather than computing pseudonyms
itself, so that the node can keep the map it needs for re-identification.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Protocol

from .uids import UidMap

__all__ = ["KeyedPseudonyms", "PatientKey", "Pseudonym", "PseudonymLookup"]

#: pseudonyms a KeyedPseudonyms keeps at hand before it starts afresh
_REMEMBERED_PATIENTS = 4096


@dataclass(frozen=True, slots=True)
class PatientKey:
    """What identifies a patient in the original data (PHI: never logged)."""

    issuer: str
    patient_id: str
    #: name and birth date, used only when patient_id is empty
    fallback: str = ""

    def canonical(self) -> bytes:
        if self.patient_id.strip():
            return f"id\0{self.issuer.strip()}\0{self.patient_id.strip()}".encode()
        return f"name\0{self.fallback.strip().upper()}".encode()


@dataclass(frozen=True, slots=True)
class Pseudonym:
    """What replaces a patient's identity."""

    patient_id: str
    patient_name: str
    #: whole days added to every date (negative: into the past)
    day_offset: int
    #: seconds added to every time, between one and 23 hours
    second_offset: int


class PseudonymLookup(Protocol):
    """Gives the pseudonym of a patient and the replacement of a UID.

    One lookup is one pseudonym space: the node uses its own for what it
    stores and, for a destination with a space of its own, another keyed
    for that destination, so that two destinations cannot link their data.
    """

    def patient(self, key: PatientKey) -> Pseudonym: ...

    def uid(self, uid: str) -> str: ...


class KeyedPseudonyms:
    """Pseudonyms derived from an HMAC of the patient key under a secret.

    Parameters
    ----------
    key : bytes
        The secret.
    prefix : str
        Upper-case prefix of every pseudonym PatientID (at most 8 characters).
    """

    def __init__(self, key: bytes, prefix: str = "ANON") -> None:
        if not key:
            raise ValueError("the pseudonym key must not be empty")
        self._key = key
        self._prefix = prefix
        self._uids = UidMap(hmac.new(key, b"uid-space", hashlib.sha256).digest())
        #: pseudonyms already derived: a series asks for one patient instance after instance
        self._patients: dict[PatientKey, Pseudonym] = {}

    def uid(self, uid: str) -> str:
        """The consistent replacement of ``uid`` in this space (see :mod:`.uids`)."""
        return self._uids.remap(uid)

    def patient(self, key: PatientKey) -> Pseudonym:
        found = self._patients.get(key)
        if found is None:
            if len(self._patients) >= _REMEMBERED_PATIENTS:
                self._patients.clear()
            found = self._patients[key] = self._derive(key)
        return found

    def _derive(self, key: PatientKey) -> Pseudonym:
        digest = hmac.new(self._key, b"patient\0" + key.canonical(), hashlib.sha256).digest()
        code = base64.b32encode(digest[:10]).decode("ascii")  # 80 bits, 16 characters
        days = int.from_bytes(digest[10:14], "big")
        minutes = int.from_bytes(digest[14:18], "big")
        return Pseudonym(
            patient_id=f"{self._prefix}{code}",
            patient_name=f"{self._prefix}^{code}",
            # between one and eleven years into the past
            day_offset=-(365 + days % 3650),
            # whole minutes, at least an hour away from the original time of day
            second_offset=60 * (60 + minutes % (1440 - 120)),
        )
