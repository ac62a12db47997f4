"""``dicom-gateway serve``: a bad value fails at start with the key, before anything listens."""

from __future__ import annotations

from collections.abc import Callable

from click.testing import Result


def test_bad_config_value_exits_2_naming_the_key(cli: Callable[..., Result]) -> None:
    result = cli("serve", DICOM_GATEWAY_LISTENER__PORT="11112a")
    assert result.exit_code == 2
    assert 'listener.port: expected an integer 1-65535, got "11112a" ' \
           "(from DICOM_GATEWAY_LISTENER__PORT)" in result.output


def test_bad_flag_exits_2_naming_the_flag(cli: Callable[..., Result]) -> None:
    result = cli("serve", "--ae-title", "THIS AE TITLE IS FAR TOO LONG")
    assert result.exit_code == 2
    assert "node.ae_title" in result.output and "(from --ae-title)" in result.output
