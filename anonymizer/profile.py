"""A de-identification profile: the Basic Profile plus chosen options, one action per tag.

PS3.15 E.1 defines the Basic Application Level Confidentiality Profile and
E.3 its options; Table E.1-1 gives, per attribute, the Basic Profile's action
and the action each option substitutes. CID 7050 (PS3.16) names the codes
that DeidentificationMethodCodeSequence records for each.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .actions import Action, resolve
from .table import load_table

__all__ = ["DEFAULT_OPTIONS", "DEFAULT_RISKY_SOP_CLASSES", "Option", "Profile"]


class Option(str, enum.Enum):
    """The ten options of PS3.15 E.3, named as the configuration names them."""

    RETAIN_SAFE_PRIVATE = "retain_safe_private"
    RETAIN_UIDS = "retain_uids"
    RETAIN_DEVICE_IDENTITY = "retain_device_identity"
    RETAIN_INSTITUTION_IDENTITY = "retain_institution_identity"
    RETAIN_PATIENT_CHARACTERISTICS = "retain_patient_characteristics"
    RETAIN_LONG_FULL_DATES = "retain_long_full_dates"
    RETAIN_LONG_MODIFIED_DATES = "retain_long_modified_dates"
    CLEAN_DESCRIPTORS = "clean_descriptors"
    CLEAN_STRUCTURED_CONTENT = "clean_structured_content"
    CLEAN_GRAPHICS = "clean_graphics"

    @property
    def code(self) -> tuple[str, str]:
        """The (CodeValue, CodeMeaning) of this option in CID 7050."""
        return _CID_7050[self]


#: CID 7050 "De-identification Method": the Basic Profile's code.
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")

_CID_7050: dict[Option, tuple[str, str]] = {
    Option.CLEAN_GRAPHICS: ("113103", "Clean Graphics Option"),
    Option.CLEAN_STRUCTURED_CONTENT: ("113104", "Clean Structured Content Option"),
    Option.CLEAN_DESCRIPTORS: ("113105", "Clean Descriptors Option"),
    Option.RETAIN_LONG_FULL_DATES: (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    Option.RETAIN_LONG_MODIFIED_DATES: (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    Option.RETAIN_PATIENT_CHARACTERISTICS: ("113108", "Retain Patient Characteristics Option"),
    Option.RETAIN_DEVICE_IDENTITY: ("113109", "Retain Device Identity Option"),
    Option.RETAIN_UIDS: ("113110", "Retain UIDs Option"),
    Option.RETAIN_SAFE_PRIVATE: ("113111", "Retain Safe Private Option"),
    Option.RETAIN_INSTITUTION_IDENTITY: ("113112", "Retain Institution Identity Option"),
}

DEFAULT_OPTIONS: frozenset[Option] = frozenset(
    {
        Option.RETAIN_LONG_MODIFIED_DATES,
        Option.CLEAN_DESCRIPTORS,
        Option.CLEAN_STRUCTURED_CONTENT,
    }
)

#: Secondary Capture, Ultrasound and Ultrasound Multi-frame: images whose
#: pixels commonly carry burned-in text, held for review unless
#: BurnedInAnnotation is NO.
DEFAULT_RISKY_SOP_CLASSES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.6.1",
        "1.2.840.10008.5.1.4.1.1.3.1",
    }
)


def _combine(codes: list[str]) -> str:
    """Combine the actions of several chosen options on one attribute.

    The only overlaps in Table E.1-1 are K from Retain Device Identity and
    C from Retain Longitudinal Temporal Information with Modified Dates on
    calibration and manufacture dates: the more protective C wins, so a
    date is never kept unshifted when the modified-dates option is chosen.
    """
    unique = set(codes)
    if len(unique) == 1:
        return codes[0]
    if "C" in unique:
        return "C"
    return min(unique)


@dataclass(frozen=True)
class Profile:
    """The Basic Profile with its chosen options, resolved to one action per tag.

    Build it with :meth:`Profile.build`; the engine only reads it.
    """

    options: frozenset[Option]
    safe_private_creators: frozenset[str] = frozenset()
    risky_sop_classes: frozenset[str] = DEFAULT_RISKY_SOP_CLASSES
    max_sequence_depth: int = 64
    residual_phi_gate: bool = True
    actions: dict[int, Action] = field(default_factory=dict, repr=False, compare=False)
    repeating: tuple[tuple[int, int, Action], ...] = field(
        default=(), repr=False, compare=False
    )
    private_action: Action = Action.REMOVE
    #: the engine's memo of (tag, VR as read, strict) -> (step, VR, action, code); derived
    plan_cache: dict[tuple[int, str | None, bool], tuple[int, str, Action, str]] = field(
        default_factory=dict, repr=False, compare=False
    )
    #: the engine's memo of action results on repeated values (see anonymizer.memo); derived
    value_cache: dict[Hashable, Any] = field(
        default_factory=dict, repr=False, compare=False
    )
    #: tables the engine derives once from the actions (see anonymizer.engine); derived
    derived: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(
        cls,
        options: Iterable[Option | str] = DEFAULT_OPTIONS,
        *,
        safe_private_creators: Iterable[str] = (),
        risky_sop_classes: Iterable[str] = DEFAULT_RISKY_SOP_CLASSES,
        max_sequence_depth: int = 64,
        residual_phi_gate: bool = True,
    ) -> Profile:
        """Resolve Table E.1-1 for the chosen options (PS3.15 E.1, E.3).

        Parameters
        ----------
        options : iterable of Option or str
            The options of PS3.15 E.3 to apply on top of the Basic Profile.
        safe_private_creators : iterable of str
            Private creators whose blocks the Retain Safe Private option keeps.
        risky_sop_classes : iterable of str
            SOP Class UIDs held for review unless BurnedInAnnotation is NO.
        max_sequence_depth : int
            Deeper sequence nesting fails the instance (DCMTK uses 64).
        residual_phi_gate : bool
            Scan the result for the instance's own identifiers.

        Raises
        ------
        ValueError
            For an unknown option, or both longitudinal date options at once.
        """
        chosen = frozenset(Option(o) for o in options)
        if {Option.RETAIN_LONG_FULL_DATES, Option.RETAIN_LONG_MODIFIED_DATES} <= chosen:
            raise ValueError(
                "retain_long_full_dates and retain_long_modified_dates exclude each other"
            )
        table = load_table()
        actions: dict[int, Action] = {}
        repeating: list[tuple[int, int, Action]] = []
        private_action = Action.REMOVE
        for row in table.rows:
            codes = [code for name, code in row.options if Option(name) in chosen]
            action = resolve(_combine(codes) if codes else row.basic)
            if row is table.private:
                private_action = action
            elif row.repeating:
                repeating.append((row.tag, row.mask, action))
            else:
                actions[row.tag] = action
        return cls(
            options=chosen,
            safe_private_creators=frozenset(safe_private_creators),
            risky_sop_classes=frozenset(risky_sop_classes),
            max_sequence_depth=max_sequence_depth,
            residual_phi_gate=residual_phi_gate,
            actions=actions,
            repeating=tuple(repeating),
            private_action=private_action,
        )

    def action_for(self, tag: int) -> Action | None:
        """The action for a public tag, or None when Table E.1-1 does not list it."""
        action = self.actions.get(tag)
        if action is None and (tag >> 28) in (5, 6):
            for base, mask, rep_action in self.repeating:
                if tag & mask == base:
                    return rep_action
        return action

    @property
    def shifts_dates(self) -> bool:
        return Option.RETAIN_LONG_MODIFIED_DATES in self.options

    @property
    def keeps_dates(self) -> bool:
        return Option.RETAIN_LONG_FULL_DATES in self.options

    def method_description(self) -> list[str]:
        """Values of DeidentificationMethod (LO, 64 characters each)."""
        values = ["PS3.15 E.1 Basic Application Confidentiality Profile"]
        values += [_CID_7050[o][1][:64] for o in sorted(self.options, key=lambda o: o.value)]
        return values

    def method_codes(self) -> list[tuple[str, str]]:
        """(CodeValue, CodeMeaning) pairs of CID 7050 for the profile and options."""
        return [BASIC_PROFILE_CODE] + [
            _CID_7050[o] for o in sorted(self.options, key=lambda o: _CID_7050[o][0])
        ]
