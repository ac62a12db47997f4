"""Consistent, keyed UID replacement (PS3.15 E.1.1 action U; PS3.5 B.2 for the 2.25 form).

The same input UID gives the same output UID wherever it stands (every
attribute, every sequence depth, every file, study and run) as long as the
secret is the same, so references between instances keep resolving. The
output is ``2.25.<integer>`` where the integer is a UUID (ISO/IEC 9834-8)
built from an HMAC-SHA256 of the input: without the secret nobody can map
an output back or forward. Well-known UIDs (SOP classes, transfer syntaxes,
coding schemes and everything under the DICOM root ``1.2.840.10008``) name
no instance and are never replaced.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid

from pydicom._uid_dict import UID_dictionary

__all__ = ["UidMap", "is_well_known"]

_DICOM_ROOT = "1.2.840.10008."
#: HL7 and other registries' coding-scheme OIDs that appear in CodingSchemeUID
_CODING_SCHEME_ROOTS = ("2.16.840.1.113883.6.", "2.16.840.1.113883.5.", "2.16.840.1.113883.3.")


def is_well_known(uid: str) -> bool:
    """True for a UID that names a standard thing rather than an instance."""
    return uid in UID_dictionary or uid.startswith(_DICOM_ROOT) or uid.startswith(
        _CODING_SCHEME_ROOTS
    )


class UidMap:
    """Keyed UID replacement, recording every mapping it made.

    Parameters
    ----------
    key : bytes
        The secret; a different key gives an unrelated, unlinkable UID space.
    """

    __slots__ = ("_keyed", "mapping")

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the UID key must not be empty")
        #: the HMAC keyed once; each UID hashes a copy of it
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)
        #: original UID -> replacement, for every UID replaced so far
        self.mapping: dict[str, str] = {}

    def remap(self, uid: str) -> str:
        """Return the replacement for ``uid`` (itself when it is well-known or empty)."""
        uid = uid.strip().rstrip("\0")
        if not uid or is_well_known(uid):
            return uid
        found = self.mapping.get(uid)
        if found is None:
            digest = self._keyed.copy()
            digest.update(b"uid\0" + uid.encode("ascii", "replace"))
            found = f"2.25.{uuid.UUID(bytes=digest.digest()[:16], version=4).int}"
            self.mapping[uid] = found
        return found
