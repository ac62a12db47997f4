"""The ``dicom-gateway`` root group and ``config`` commands, through click's CliRunner."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from config import ConfigError
from config._keys import SPECS
from gateway.cli import AppContext, main
from gateway.cli._exit import FAILED, NOT_FOUND, OK, UNREACHABLE, USAGE, translate_errors
from gateway.errors import GatewayError, NotFoundError, PeerUnreachable, UsageError

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGURED_LOGGERS = ("gateway", "storage", "anonymizer", "config", "pynetdicom", "apscheduler",
                      "alembic", "sqlalchemy")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The root group configures logging; put the loggers back for the tests that follow."""
    saved = {
        name: (logger.level, list(logger.handlers), logger.propagate)
        for name in CONFIGURED_LOGGERS
        for logger in [logging.getLogger(name)]
    }
    yield
    for name, (level, handlers, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder, so ./var resolves under tmp_path."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def clean_env(**extra: str) -> dict[str, str | None]:
    """An env= for CliRunner: unset every DICOM_GATEWAY_* variable, then set ``extra``."""
    env: dict[str, str | None] = {
        name: None for name in os.environ if name.startswith("DICOM_GATEWAY_")
    }
    env.update(extra)
    return env


def invoke(args: list[str], **env: str) -> Result:
    return CliRunner().invoke(main, args, env=clean_env(**env), catch_exceptions=False)


def test_exit_codes_agree_with_the_error_classes() -> None:
    assert (OK, FAILED, USAGE, NOT_FOUND, UNREACHABLE) == (0, 1, 2, 3, 4)
    assert GatewayError.exit_code == FAILED
    assert UsageError.exit_code == USAGE
    assert NotFoundError.exit_code == NOT_FOUND
    assert PeerUnreachable.exit_code == UNREACHABLE


def test_config_check_ok(workdir: Path) -> None:
    result = invoke(["config", "check"])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "config ok"
    assert any(line.startswith("file:") and "none" in line for line in lines)
    assert result.stderr == ""
    assert not (workdir / "var").exists()


def test_config_check_names_the_file_and_variables(workdir: Path) -> None:
    path = workdir / "gateway.toml"
    path.write_text('[node]\nae_title = "SECOND"\n', encoding="utf-8")

    result = invoke(
        ["--config", str(path), "config", "check"], DICOM_GATEWAY_LISTENER__PORT="11113"
    )

    assert result.exit_code == 0, result.output
    assert f"file:        {path}" in result.stdout.splitlines()
    assert "environment: DICOM_GATEWAY_LISTENER__PORT" in result.stdout.splitlines()


def test_config_file_from_env_var(workdir: Path) -> None:
    path = workdir / "gateway.toml"
    path.write_text("[listener]\nport = 2104\n", encoding="utf-8")

    result = invoke(["config", "show", "--json"], DICOM_GATEWAY_CONFIG=str(path))

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["listener"]["port"] == 2104


def test_config_check_bad_env_value_exits_2_naming_the_key(workdir: Path) -> None:
    result = invoke(["config", "check"], DICOM_GATEWAY_LISTENER__PORT="11112a")

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "Error: invalid configuration (1 problem):",
        'listener.port: expected an integer 1-65535, got "11112a" '
        "(from DICOM_GATEWAY_LISTENER__PORT)",
    ]


def test_config_check_lists_every_problem(workdir: Path) -> None:
    path = workdir / "gateway.toml"
    path.write_text("[listener]\nport = 0\nprot = 1\n", encoding="utf-8")

    result = invoke(
        ["--config", str(path), "config", "check"], DICOM_GATEWAY_LOGGING__LEVEL="LOUD"
    )

    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "Error: invalid configuration (3 problems):"
    assert [line.split(":")[0] for line in lines[1:]] == [
        "listener.prot",
        "listener.port",
        "logging.level",
    ]


def test_config_check_missing_file_exits_2(workdir: Path) -> None:
    result = invoke(["--config", str(workdir / "absent.toml"), "config", "check"])

    assert result.exit_code == 2
    assert f"{workdir / 'absent.toml'}: cannot read the config file" in result.stderr


def test_config_show_json_is_one_document(workdir: Path) -> None:
    result = invoke(
        ["config", "show", "--json"],
        DICOM_GATEWAY_LISTENER__PORT="11113",
        DICOM_GATEWAY_DATABASE__URL="postgresql+psycopg://gw:hunter2@db/gateway",
    )

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data) == ["node", "listener", "tls", "storage", "database", "anonymizer", "limits",
                          "policy", "ingest", "query", "forward", "audit", "status", "logging"]
    assert data["node"] == {"ae_title": "GATEWAY", "uid_root": "1.2.826.0.1.3680043.8.498."}
    # processes = 0 (the default) shows as what it resolves to: one per core
    assert data["listener"] == {"bind": "127.0.0.1", "port": 11113,
                                "processes": os.cpu_count() or 1}
    assert data["storage"] == {"data_dir": str(workdir / "var"),
                               "spool_dir": str(workdir / "var" / "spool")}
    assert data["database"]["url"] == "postgresql+psycopg://gw:***@db/gateway"
    assert data["anonymizer"]["max_sequence_depth"] == 64
    assert data["anonymizer"]["residual_phi_gate"] is True
    assert data["anonymizer"]["key_file"] == str(workdir / "var" / "secrets" / "hmac.key")
    assert data["logging"] == {"level": "INFO"}
    assert "hunter2" not in result.output


def test_config_show_text_is_aligned(workdir: Path) -> None:
    result = invoke(["config", "show"], DICOM_GATEWAY_LISTENER__PORT="11113")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == sum(len(keys) for keys in SPECS.values()) + 1  # + effective_url
    assert len({line.index(" = ") for line in lines}) == 1
    port = next(line for line in lines if line.startswith("listener.port "))
    assert port.split(" = ")[1] == "11113  # from DICOM_GATEWAY_LISTENER__PORT"
    title = next(line for line in lines if line.startswith("node.ae_title "))
    assert title.split(" = ")[1] == '"GATEWAY"'


def test_config_show_bad_config_exits_2(workdir: Path) -> None:
    result = invoke(["config", "show", "--json"], DICOM_GATEWAY_NODE__AE_TITLE="")

    assert result.exit_code == 2
    assert result.stdout == ""
    assert "node.ae_title: expected an AE title" in result.stderr


@pytest.mark.parametrize(
    "args",
    [["--help"], ["config", "--help"], ["config", "check", "--help"], ["config", "show", "-h"]],
)
def test_help_never_loads_the_config(workdir: Path, args: list[str]) -> None:
    broken = workdir / "broken.toml"
    broken.write_text("[listener\nport = ", encoding="utf-8")

    by_flag = invoke(["--config", str(broken), *args])
    by_env = invoke(args, DICOM_GATEWAY_CONFIG=str(broken), DICOM_GATEWAY_LISTENER__PORT="x")

    for result in (by_flag, by_env):
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("Usage: ")
        assert result.stderr == ""


def test_app_context_loads_once_and_only_when_asked(workdir: Path) -> None:
    environ = {"DICOM_GATEWAY_LISTENER__PORT": "2104", "DICOM_GATEWAY_HMAC_KEY": "00" * 16}
    broken = AppContext(config_path=workdir / "absent.toml", environ=environ)
    app = AppContext(environ=environ, overrides={"node.ae_title": "FLAGGED"})

    with pytest.raises(ConfigError):
        broken.settings
    assert app.environ["DICOM_GATEWAY_HMAC_KEY"] == "00" * 16
    assert app.settings.listener.port == 2104
    assert app.settings.node.ae_title == "FLAGGED"
    assert app.settings is app.settings


def test_root_help_lists_config() -> None:
    result = invoke(["--help"])

    assert result.exit_code == 0
    assert "config  " in result.stdout
    assert "DICOM_GATEWAY_CONFIG" in result.stdout


def test_verbose_and_quiet_together_is_a_usage_error(workdir: Path) -> None:
    result = invoke(["-v", "-q", "config", "check"])

    assert result.exit_code == 2
    assert "-v and -q cannot be used together" in result.stderr


@pytest.mark.parametrize(
    ("flags", "ours", "pynetdicom"),
    [
        ([], logging.WARNING, logging.WARNING),
        (["-q"], logging.ERROR, logging.WARNING),
        (["-v"], logging.INFO, logging.WARNING),
        (["-vv"], logging.DEBUG, logging.DEBUG),
    ],
)
def test_verbosity_sets_log_levels(
    workdir: Path, flags: list[str], ours: int, pynetdicom: int
) -> None:
    result = invoke([*flags, "config", "check"])

    assert result.exit_code == 0, result.output
    assert logging.getLogger("gateway").level == ours
    assert logging.getLogger("config").level == ours
    assert logging.getLogger("pynetdicom").level == pynetdicom
    assert logging.getLogger("apscheduler").level == logging.WARNING


def test_log_lines_go_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.logs import configure_logging

    configure_logging(1)
    logging.getLogger("gateway.test").info("forward study=2.25.1 state=done")
    logging.getLogger("gateway.test").debug("not shown at -v")

    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.endswith(" INFO gateway.test: forward study=2.25.1 state=done")


def test_version() -> None:
    result = invoke(["--version"])

    assert result.exit_code == 0
    assert result.stdout.startswith("dicom-gateway, version ")


def _failing_command(error: Exception) -> click.Command:
    @click.command()
    @translate_errors
    def fail() -> None:
        raise error

    return fail


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (GatewayError("forward failed: peer refused the association"), 1),
        (UsageError("--once is required"), 2),
        (NotFoundError("no peer named institute-b"), 3),
        (PeerUnreachable("institute-a at 10.0.0.9:104 did not answer"), 4),
    ],
)
def test_gateway_errors_become_one_line_and_their_exit_code(
    error: GatewayError, code: int
) -> None:
    result = CliRunner().invoke(_failing_command(error), [], obj=AppContext(verbosity=0))

    assert result.exit_code == code
    assert result.stderr == f"Error: {error}\n"
    assert result.stdout == ""


def test_traceback_only_when_verbose() -> None:
    command = _failing_command(NotFoundError("no study 2.25.1"))

    quiet = CliRunner().invoke(command, [], obj=AppContext(verbosity=0))
    verbose = CliRunner().invoke(command, [], obj=AppContext(verbosity=1))

    assert "Traceback" not in quiet.stderr
    assert "Traceback (most recent call last)" in verbose.stderr
    assert verbose.stderr.rstrip().endswith("Error: no study 2.25.1")
    assert verbose.exit_code == quiet.exit_code == 3


def test_python_dash_m_gateway_help(tmp_path: Path) -> None:
    env = {
        name: value for name, value in os.environ.items() if not name.startswith("DICOM_GATEWAY_")
    }
    env["DICOM_GATEWAY_CONFIG"] = str(tmp_path / "absent.toml")

    completed = subprocess.run(
        [sys.executable, "-m", "gateway", "--help"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("Usage: dicom-gateway ")
    assert "config" in completed.stdout
