"""The instance's own identifiers: what action C removes and the residual-PHI gate looks for.

Before de-identifying, the engine collects from the original instance, at
every depth, the values that name the patient or the people and places
around them: the components of every person name (PN), PatientID and other
patient IDs, AccessionNumber, the birth date in the spellings people write,
addresses and telephone numbers, institution names. Values that the chosen
options retain (for example InstitutionName under Retain Institution
Identity) are not identifiers for this purpose.

Matching is case-insensitive on whole words (an identifier never matches
inside a longer word: the family name LI does not hit LIVER), with any run of
white space matching any other. Nothing here is ever logged: reports name
the attribute an identifier came from, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["IDENTIFIER_KEYWORDS", "Identifiers"]

#: keyword -> kind, for the non-PN attributes whose values are identifiers.
#: Every PN attribute counts too, by its VR.
IDENTIFIER_KEYWORDS: dict[str, str] = {
    "PatientID": "id",
    "OtherPatientIDs": "id",
    "AccessionNumber": "id",
    "MedicalRecordLocator": "id",
    "PatientInsurancePlanCodeSequence": "id",
    "IssuerOfPatientID": "id",
    "PatientBirthDate": "date",
    "PatientAddress": "address",
    "InstitutionAddress": "address",
    "ReferringPhysicianAddress": "address",
    "PersonAddress": "address",
    "PatientTelephoneNumbers": "phone",
    "ReferringPhysicianTelephoneNumbers": "phone",
    "PersonTelephoneNumbers": "phone",
    "InstitutionName": "text",
    "MilitaryRank": "text",
    "BranchOfService": "text",
}

_SPLIT_ADDRESS = re.compile(r"[\^,;\r\n]+")
_SPLIT_NAME = re.compile(r"[\^=]+")
_EIGHT_DIGITS = re.compile(r"\d{8}")
_SPACES = re.compile(r"[ \t]{2,}")


def _date_spellings(value: str) -> list[str]:
    value = value.strip()
    if not _EIGHT_DIGITS.fullmatch(value):
        return [value]
    y, m, d = value[:4], value[4:6], value[6:]
    return [value, f"{y}-{m}-{d}", f"{d}.{m}.{y}", f"{m}/{d}/{y}", f"{d}/{m}/{y}"]


def _tokens(kind: str, value: str) -> list[str]:
    value = value.strip().strip("\0")
    if kind == "name":
        parts = _SPLIT_NAME.split(value)
        return [p.strip() for p in parts if len(p.strip()) >= 2]
    if kind == "date":
        return _date_spellings(value)
    if kind == "address":
        parts = [p.strip() for p in _SPLIT_ADDRESS.split(value)]
        return [value] + [p for p in parts if len(p) >= 3]
    return [value] if len(value) >= 3 else []


@dataclass(frozen=True)
class Identifiers:
    """The identifiers of one instance, as a compiled matcher.

    ``sources`` maps each identifier (upper-cased, white space folded) to
    the keyword it came from, so that a report can say which attribute's
    value leaked without repeating the value.
    """

    sources: dict[str, str]
    pattern: re.Pattern[str] | None

    @classmethod
    def build(cls, found: Iterable[tuple[str, str, str]]) -> Identifiers:
        """Build from ``(keyword, kind, value)`` triples; kind is name/id/date/address/phone/text.

        The instances of one series share their identifiers, so the matcher
        is built once per distinct set and reused.
        """
        return _build(tuple(sorted(set(found))))

    def scrub(self, text: str) -> str:
        """Remove every identifier from ``text`` (action C); white space is tidied."""
        if self.pattern is None or not text:
            return text
        cleaned, count = self.pattern.subn("", text)
        if not count:
            return text
        return _SPACES.sub(" ", cleaned).strip()

    def blank(self, data: bytes) -> bytes:
        """Overwrite identifiers in binary data with spaces, keeping every offset.

        Binary attributes that the profile cleans (MakerNote, SOP
        authorization data) have a structure that text removal would break;
        overwriting in place keeps their length and layout.
        """
        if self.pattern is None or not data:
            return data
        text = data.decode("latin-1")
        cleaned = self.pattern.sub(lambda m: " " * len(m.group(0)), text)
        return data if cleaned == text else cleaned.encode("latin-1")

    def first_hit(self, text: str) -> str | None:
        """The keyword whose value occurs in ``text``, or None."""
        if self.pattern is None or not text:
            return None
        match = self.pattern.search(text)
        if match is None:
            return None
        return self.sources.get(" ".join(match.group(0).upper().split()), "identifier")


@lru_cache(maxsize=256)
def _build(found: tuple[tuple[str, str, str], ...]) -> Identifiers:
    sources: dict[str, str] = {}
    for keyword, kind, value in found:
        for token in _tokens(kind, value):
            sources.setdefault(" ".join(token.upper().split()), keyword)
    if not sources:
        return Identifiers(sources, None)
    alternatives = sorted(sources, key=len, reverse=True)
    body = "|".join(r"\s+".join(map(re.escape, t.split(" "))) for t in alternatives)
    pattern = re.compile(rf"(?<![0-9A-Za-z_])(?:{body})(?![0-9A-Za-z_])", re.IGNORECASE)
    return Identifiers(sources, pattern)
