"""De-identification of DICOM instances by PS3.15 Annex E.

The Basic Application Level Confidentiality Profile and its options, driven
by the package's own copy of Table E.1-1, with keyed UID replacement, keyed
patient pseudonyms and date shifting, and a residual-PHI gate. pydicom and
the standard library only: no database, no network, no configuration; the
caller passes a :class:`Profile` and a :class:`PseudonymLookup`.
"""

from __future__ import annotations

from .actions import Action
from .deidentify import OriginalStudy, Result, anonymize
from .errors import AnonymizationError, ResidualPHIError
from .profile import DEFAULT_OPTIONS, DEFAULT_RISKY_SOP_CLASSES, Option, Profile
from .pseudonyms import KeyedPseudonyms, PatientKey, Pseudonym, PseudonymLookup

__all__ = [
    "DEFAULT_OPTIONS",
    "DEFAULT_RISKY_SOP_CLASSES",
    "Action",
    "AnonymizationError",
    "KeyedPseudonyms",
    "Option",
    "OriginalStudy",
    "PatientKey",
    "Profile",
    "Pseudonym",
    "PseudonymLookup",
    "ResidualPHIError",
    "Result",
    "anonymize",
]
