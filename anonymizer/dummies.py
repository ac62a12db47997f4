"""Dummy values for action D (PS3.15 E.1.1): non-zero length and valid for the VR.

Each is plainly a dummy to a reader (a name ANONYMIZED, the date 19000101),
so nobody mistakes it for data, and each satisfies the VR's rules in PS3.5
6.2 so that the object stays valid (a D on a DA gets a valid date, on a PN a
valid name). UIDs never get a dummy: action D on a UI replaces it like U, so
that references stay consistent.
"""

from __future__ import annotations

__all__ = ["DUMMY_TEXT", "dummy_value"]

DUMMY_TEXT = "ANONYMIZED"

_DUMMIES: dict[str, object] = {
    "AE": "ANONYMIZED",
    "AS": "000D",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": DUMMY_TEXT,
    "LT": DUMMY_TEXT,
    "PN": DUMMY_TEXT + "^",
    "SH": DUMMY_TEXT,
    "ST": DUMMY_TEXT,
    "UC": DUMMY_TEXT,
    "UT": DUMMY_TEXT,
    "UR": "urn:anonymized",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
    "AT": 0,
}


def dummy_value(vr: str) -> object:
    """The dummy value for a VR; two zero bytes for binary and unknown VRs."""
    return _DUMMIES.get(vr, b"\0\0")
