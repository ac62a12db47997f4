"""The package's copy of PS3.15 Table E.1-1 and the profile resolved from it."""

from __future__ import annotations

import pytest

from anonymizer import Action, Option, Profile
from anonymizer.actions import resolve
from anonymizer.table import OPTION_COLUMNS, load_table


def test_table_has_every_row_of_the_standard() -> None:
    table = load_table()
    assert len(table.rows) == 621
    assert len(table.repeating) == 3  # (50xx,xxxx), (60xx,3000), (60xx,4000)
    assert table.private.basic == "X"
    assert table.by_tag[0x00100010].keyword == "PatientName"
    assert {name for row in table.rows for name, _ in row.options} <= set(OPTION_COLUMNS)


@pytest.mark.parametrize(
    ("code", "action"),
    [
        ("D", Action.DUMMY), ("Z", Action.ZERO), ("X", Action.REMOVE), ("K", Action.KEEP),
        ("C", Action.CLEAN), ("U", Action.UID), ("X/Z", Action.ZERO), ("X/D", Action.DUMMY),
        ("Z/D", Action.DUMMY), ("X/Z/D", Action.DUMMY), ("X/Z/U*", Action.UID),
    ],
)
def test_every_code_resolves(code: str, action: Action) -> None:
    assert resolve(code) is action


def test_unknown_code_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown PS3.15"):
        resolve("Q")


def test_every_row_resolves_under_every_single_option() -> None:
    for option in Option:
        profile = Profile.build([option])
        assert len(profile.actions) == 617  # 621 less 3 repeating groups and the private row


def test_basic_profile_actions() -> None:
    profile = Profile.build([])
    assert profile.action_for(0x00100010) is Action.ZERO  # PatientName Z
    assert profile.action_for(0x00080018) is Action.UID  # SOPInstanceUID U
    assert profile.action_for(0x00081030) is Action.REMOVE  # StudyDescription X
    assert profile.action_for(0x00080080) is Action.DUMMY  # InstitutionName X/Z/D
    assert profile.action_for(0x60023000) is Action.REMOVE  # OverlayData, any 60xx group
    assert profile.action_for(0x50020010) is Action.REMOVE  # curve group 50xx
    assert profile.action_for(0x00280010) is None  # Rows: not listed


def test_options_override_the_basic_profile() -> None:
    profile = Profile.build(
        [Option.CLEAN_DESCRIPTORS, Option.RETAIN_INSTITUTION_IDENTITY, Option.RETAIN_UIDS]
    )
    assert profile.action_for(0x00081030) is Action.CLEAN  # StudyDescription
    assert profile.action_for(0x00080080) is Action.KEEP  # InstitutionName
    assert profile.action_for(0x00080018) is Action.KEEP  # SOPInstanceUID


def test_modified_dates_win_over_device_identity_on_calibration_dates() -> None:
    profile = Profile.build(
        [Option.RETAIN_DEVICE_IDENTITY, Option.RETAIN_LONG_MODIFIED_DATES]
    )
    assert profile.action_for(0x00181200) is Action.CLEAN  # DateOfLastCalibration
    assert profile.action_for(0x00181000) is Action.KEEP  # DeviceSerialNumber


def test_the_two_date_options_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        Profile.build([Option.RETAIN_LONG_FULL_DATES, Option.RETAIN_LONG_MODIFIED_DATES])


def test_method_codes_follow_cid_7050() -> None:
    profile = Profile.build()
    codes = [value for value, _ in profile.method_codes()]
    assert codes == ["113100", "113104", "113105", "113107"]
