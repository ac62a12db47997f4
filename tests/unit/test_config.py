"""Unit tests for config/: defaults, precedence, type conversion and error lines."""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import pickle
import tomllib
import typing
from collections.abc import Callable
from pathlib import Path

import pytest

import config
from config import (
    ANONYMIZER_OPTIONS,
    ConfigError,
    Override,
    Settings,
    load_config,
)

DEFAULT_OPTIONS = ("retain_long_modified_dates", "clean_descriptors", "clean_structured_content")
RISKY = ("1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder, so ./var resolves under tmp_path."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def write_toml(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a user config file and return its path."""

    def create(text: str, name: str = "gateway.toml") -> Path:
        path = tmp_path / "etc" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return create


def problems_of(
    path: Path | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, object] | None = None,
) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ or {}, overrides)
    return caught.value.problems


# --- defaults -----------------------------------------------------------------


def test_embedded_default_runs_a_node(workdir: Path) -> None:
    settings = load_config(None, {})

    assert settings.node.ae_title == "GATEWAY"
    assert settings.listener.bind == "127.0.0.1"
    assert settings.listener.port == 11112
    assert settings.storage.data_dir == workdir / "var"
    assert settings.storage.data_dir.is_absolute()
    assert settings.database.url == ""
    assert settings.database_url == f"sqlite:///{workdir}/var/gateway.sqlite3"
    assert settings.anonymizer.options == DEFAULT_OPTIONS
    assert settings.anonymizer.safe_private_creators == ()
    assert settings.anonymizer.risky_sop_classes == RISKY
    assert settings.anonymizer.pseudonym_prefix == "ANON"
    assert settings.anonymizer.key_env == "DICOM_GATEWAY_HMAC_KEY"
    assert settings.anonymizer.key_file == workdir / "var" / "secrets" / "hmac.key"
    assert settings.anonymizer.residual_phi_gate is True
    assert settings.anonymizer.max_sequence_depth == 64
    assert settings.forward.commit_timeout_seconds == 30
    assert settings.logging.level == "INFO"
    assert settings.config_file is None
    assert settings.sources == ()
    assert not (workdir / "var").exists(), "loading must not create anything"


def test_os_environ_is_never_read(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOM_GATEWAY_LISTENER__PORT", "4242")
    monkeypatch.setenv("DICOM_GATEWAY_LISTENER__NOPE", "1")

    assert load_config(None, {}).listener.port == 11112


def test_settings_are_frozen(workdir: Path) -> None:
    settings = load_config(None, {})

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.listener.port = 1  # type: ignore[misc]


def test_default_toml_comments_every_key_and_matches_the_schema() -> None:
    text = importlib.resources.files("config").joinpath("default.toml").read_text("utf-8")
    lines = text.splitlines()
    key_lines = [
        index
        for index, line in enumerate(lines)
        if line and not line.startswith(("#", "[")) and "=" in line
    ]
    for index in key_lines:
        assert lines[index - 1].startswith("#"), f"no comment above: {lines[index]}"

    document = tomllib.loads(text)
    hints = typing.get_type_hints(Settings)
    schema = {
        item.name: [field.name for field in dataclasses.fields(hints[item.name])]
        for item in dataclasses.fields(Settings)
        if item.name not in ("config_file", "sources")
    }
    assert {section: list(table) for section, table in document.items()} == schema
    assert len(key_lines) == sum(len(keys) for keys in schema.values())


def test_anonymizer_options_are_the_ten_in_table_order() -> None:
    assert ANONYMIZER_OPTIONS == (
        "retain_safe_private",
        "retain_uids",
        "retain_device_identity",
        "retain_institution_identity",
        "retain_patient_characteristics",
        "retain_long_full_dates",
        "retain_long_modified_dates",
        "clean_descriptors",
        "clean_structured_content",
        "clean_graphics",
    )
    assert set(config.__all__) >= {"load_config", "ConfigError", "Settings", "ANONYMIZER_OPTIONS"}


# --- precedence ---------------------------------------------------------------


def test_user_file_overrides_the_default(workdir: Path, write_toml: Callable[..., Path]) -> None:
    path = write_toml(
        '[node]\nae_title = "SECOND"\n[listener]\nport = 104\n[storage]\ndata_dir = "data"\n'
    )

    settings = load_config(path, {})

    assert settings.node.ae_title == "SECOND"
    assert settings.listener.port == 104
    assert settings.listener.bind == "127.0.0.1", "keys not in the file keep the default"
    # relative to the working directory, not to the file's folder
    assert settings.storage.data_dir == workdir / "data"
    assert settings.database_url == f"sqlite:///{workdir}/data/gateway.sqlite3"
    assert settings.anonymizer.key_file == workdir / "data" / "secrets" / "hmac.key"
    assert settings.config_file == path
    assert settings.source_of("listener.port") == str(path)
    assert settings.source_of("listener.bind") == "the embedded default"


def test_config_env_names_the_file(workdir: Path, write_toml: Callable[..., Path]) -> None:
    path = write_toml("[listener]\nport = 2000\n")

    settings = load_config(None, {"DICOM_GATEWAY_CONFIG": str(path)})

    assert settings.listener.port == 2000
    assert settings.config_file == path


def test_explicit_path_wins_over_config_env(
    workdir: Path, write_toml: Callable[..., Path]
) -> None:
    chosen = write_toml("[listener]\nport = 2000\n", "chosen.toml")
    other = write_toml("[listener]\nport = 3000\n", "other.toml")

    settings = load_config(chosen, {"DICOM_GATEWAY_CONFIG": str(other)})

    assert settings.listener.port == 2000


def test_env_overrides_file(workdir: Path, write_toml: Callable[..., Path]) -> None:
    path = write_toml("[listener]\nport = 2000\nbind = \"0.0.0.0\"\n")

    settings = load_config(path, {"DICOM_GATEWAY_LISTENER__PORT": "11113"})

    assert settings.listener.port == 11113
    assert settings.listener.bind == "0.0.0.0"
    assert settings.source_of("listener.port") == "DICOM_GATEWAY_LISTENER__PORT"


def test_overrides_beat_env(workdir: Path) -> None:
    environ = {"DICOM_GATEWAY_LISTENER__PORT": "11113", "DICOM_GATEWAY_NODE__AE_TITLE": "ENV"}

    settings = load_config(
        None,
        environ,
        {"listener.port": Override(11114, "--port"), "node.ae_title": None},
    )

    assert settings.listener.port == 11114
    assert settings.source_of("listener.port") == "--port"
    assert settings.node.ae_title == "ENV", "a None override is a flag not given"


def test_string_overrides_are_parsed_like_env(workdir: Path) -> None:
    settings = load_config(None, {}, {"listener.port": "2001", "storage.data_dir": Path("/srv/gw")})

    assert settings.listener.port == 2001
    assert settings.storage.data_dir == Path("/srv/gw")
    assert settings.anonymizer.key_file == Path("/srv/gw/secrets/hmac.key")


def test_other_gateway_variables_are_not_keys(workdir: Path) -> None:
    environ = {
        "DICOM_GATEWAY_HMAC_KEY": "not a key, a secret",
        "DICOM_GATEWAY_CONFIG": "",
        "DICOM_GATEWAY_SOMETHING": "x",
        "OTHER_LISTENER__PORT": "x",
    }

    assert load_config(None, environ).listener.port == 11112


# --- conversion from text -----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('["clean_graphics", "retain_uids"]', ("clean_graphics", "retain_uids")),
        ("clean_graphics, retain_uids", ("clean_graphics", "retain_uids")),
        ("clean_graphics", ("clean_graphics",)),
        ("[]", ()),
        ("", ()),
    ],
)
def test_list_from_env(workdir: Path, raw: str, expected: tuple[str, ...]) -> None:
    settings = load_config(None, {"DICOM_GATEWAY_ANONYMIZER__OPTIONS": raw})

    assert settings.anonymizer.options == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("1", True), ("YES", True), ("false", False), ("0", False), ("no", False)],
)
def test_bool_from_env(workdir: Path, raw: str, expected: bool) -> None:
    settings = load_config(None, {"DICOM_GATEWAY_ANONYMIZER__RESIDUAL_PHI_GATE": raw})

    assert settings.anonymizer.residual_phi_gate is expected


def test_home_expands_from_environ(workdir: Path) -> None:
    settings = load_config(None, {"HOME": "/home/gw", "DICOM_GATEWAY_STORAGE__DATA_DIR": "~/var"})

    assert settings.storage.data_dir == Path("/home/gw/var")


def test_log_level_any_case(workdir: Path) -> None:
    assert load_config(None, {"DICOM_GATEWAY_LOGGING__LEVEL": "debug"}).logging.level == "DEBUG"


# --- problem lines ------------------------------------------------------------


def test_problem_line_shape_is_exact(workdir: Path) -> None:
    problems = problems_of(environ={"DICOM_GATEWAY_LISTENER__PORT": "11112a"})

    assert problems == (
        'listener.port: expected an integer 1-65535, got "11112a" '
        "(from DICOM_GATEWAY_LISTENER__PORT)",
    )


ENV_CASES = [
    # key, raw text, how the value is shown, a piece of the expected text
    ("listener.port", "0", "\"0\"", "an integer 1-65535"),
    ("listener.port", "65536", "\"65536\"", "an integer 1-65535"),
    ("listener.port", "1_000", "\"1_000\"", "an integer 1-65535"),
    ("listener.bind", "localhost", "\"localhost\"", "an IP address"),
    ("listener.bind", "999.0.0.1", "\"999.0.0.1\"", "an IP address"),
    ("node.ae_title", "", '""', "an AE title"),
    ("node.ae_title", "   ", '"   "', "an AE title"),
    ("node.ae_title", "A" * 17, f'"{"A" * 17}"', "an AE title"),
    ("node.ae_title", "A\\B", '"A\\\\B"', "an AE title"),
    ("node.ae_title", "A\tB", '"A\\tB"', "an AE title"),
    ("storage.data_dir", "", '""', "a folder path"),
    ("database.url", "mysql://gw@db/x", '"mysql://gw@db/x"', "postgresql+psycopg://"),
    ("anonymizer.options", "clean_everything", '"clean_everything"', "retain_safe_private"),
    ("anonymizer.options", "clean_graphics,clean_graphics", None, "a list of options"),
    ("anonymizer.options", '["clean_graphics"', None, "a list of options"),
    ("anonymizer.options", "[1, 2]", '"[1, 2]"', "a list of options"),
    ("anonymizer.risky_sop_classes", "1.2.03", '"1.2.03"', "a list of UIDs"),
    ("anonymizer.risky_sop_classes", "1..2", '"1..2"', "a list of UIDs"),
    ("anonymizer.risky_sop_classes", "1.2.a", '"1.2.a"', "a list of UIDs"),
    ("anonymizer.risky_sop_classes", "1." + "2" * 63, None, "a list of UIDs"),
    ("anonymizer.safe_private_creators", "A\\B", None, "private creator"),
    ("anonymizer.pseudonym_prefix", "anon", '"anon"', "1-8 characters from A-Z and 0-9"),
    ("anonymizer.pseudonym_prefix", "ANONYMOUS", '"ANONYMOUS"', "1-8 characters"),
    ("anonymizer.pseudonym_prefix", "", '""', "1-8 characters"),
    ("anonymizer.key_env", "1KEY", '"1KEY"', "an environment variable name"),
    ("anonymizer.key_env", "DICOM_GATEWAY_A__B", None, "an environment variable name"),
    ("anonymizer.key_file", "", '""', "a file path"),
    ("anonymizer.residual_phi_gate", "maybe", '"maybe"', "true or false"),
    ("anonymizer.max_sequence_depth", "0", '"0"', "an integer 1-1000"),
    ("anonymizer.max_sequence_depth", "1001", '"1001"', "an integer 1-1000"),
    ("audit.syslog", "tcp://collector:514", '"tcp://collector:514"', "udp://HOST:PORT"),
    ("audit.syslog", "udp://collector", '"udp://collector"', "udp://HOST:PORT"),
    ("audit.syslog", "udp://collector:70000", '"udp://collector:70000"', "udp://HOST:PORT"),
    ("status.min_free_disk_mb", "-1", '"-1"', "megabytes, 0-1048576"),
    ("status.max_pending_age_seconds", "soon", '"soon"', "seconds, 0-31536000"),
    ("logging.level", "TRACE", '"TRACE"', "one of DEBUG, INFO, WARNING, ERROR"),
    ("forward.commit_timeout_seconds", "0", '"0"', "seconds, 1-3600"),
    ("forward.commit_timeout_seconds", "soon", '"soon"', "seconds, 1-3600"),
    ("forward.max_workers", "0", '"0"', "an integer 1-64"),
    ("forward.max_workers", "65", '"65"', "an integer 1-64"),
]


@pytest.mark.parametrize(("key", "raw", "shown", "expected"), ENV_CASES)
def test_bad_env_value_names_key_value_expected_source(
    workdir: Path, key: str, raw: str, shown: str | None, expected: str
) -> None:
    section, name = key.split(".")
    variable = f"DICOM_GATEWAY_{section.upper()}__{name.upper()}"

    problems = problems_of(environ={variable: raw})

    assert len(problems) == 1
    line = problems[0]
    assert line.startswith(f"{key}: expected ")
    assert expected in line
    assert f", got {shown if shown is not None else json.dumps(raw)}" in line
    assert line.endswith(f"(from {variable})")


FILE_CASES = [
    ("[listener]\nport = 70000\n", "listener.port", "got 70000", "an integer 1-65535"),
    ('[listener]\nport = "11112"\n', "listener.port", 'got "11112"', "an integer"),
    ("[listener]\nport = true\n", "listener.port", "got true", "an integer"),
    ("[listener]\nport = 11112.0\n", "listener.port", "got 11112.0", "an integer"),
    ("[anonymizer]\nresidual_phi_gate = 1\n", "anonymizer.residual_phi_gate", "got 1", "true"),
    ('[anonymizer]\noptions = "clean_graphics"\n', "anonymizer.options", 'got "clean_graphics"',
     "a list"),
    ("[anonymizer]\nrisky_sop_classes = [1]\n", "anonymizer.risky_sop_classes", "got [1]",
     "a list of UIDs"),
    ("[node]\nae_title = 5\n", "node.ae_title", "got 5", "an AE title"),
    ("[storage]\ndata_dir = [\"a\"]\n", "storage.data_dir", 'got ["a"]', "a folder path"),
]


@pytest.mark.parametrize(("text", "key", "got", "expected"), FILE_CASES)
def test_bad_file_value_names_key_value_expected_source(
    workdir: Path, write_toml: Callable[..., Path], text: str, key: str, got: str, expected: str
) -> None:
    path = write_toml(text)

    problems = problems_of(path)

    assert len(problems) == 1
    line = problems[0]
    assert line.startswith(f"{key}: expected ")
    assert expected in line
    assert got in line
    assert line.endswith(f"(from {path})")


def test_bad_override_names_the_flag(workdir: Path) -> None:
    problems = problems_of(overrides={"listener.port": Override("http", "--port")})

    assert problems == ('listener.port: expected an integer 1-65535, got "http" (from --port)',)


def test_bad_plain_override_says_command_line(workdir: Path) -> None:
    problems = problems_of(overrides={"listener.port": 0})

    assert problems == (
        "listener.port: expected an integer 1-65535, got 0 (from the command line)",
    )


def test_all_problems_are_reported_at_once(
    workdir: Path, write_toml: Callable[..., Path]
) -> None:
    path = write_toml(
        "[node]\nae_title = \"THIS TITLE IS TOO LONG\"\n"
        "[listener]\nport = 0\nbnid = \"0.0.0.0\"\n"
        "[logging]\nlevel = \"LOUD\"\n"
    )
    environ = {
        "DICOM_GATEWAY_ANONYMIZER__MAX_SEQUENCE_DEPTH": "deep",
        "DICOM_GATEWAY_STORAGE__DATADIR": "/x",
    }

    with pytest.raises(ConfigError) as caught:
        load_config(path, environ, {"listener.bind": Override("nowhere", "--bind")})

    problems = caught.value.problems
    assert len(problems) == 7
    assert [line.split(":")[0] for line in problems] == [
        "listener.bnid",
        "storage.datadir",
        "node.ae_title",
        "listener.bind",
        "listener.port",
        "anonymizer.max_sequence_depth",
        "logging.level",
    ]
    assert str(caught.value) == "\n".join(problems)


def test_a_bad_file_value_overridden_by_env_is_not_a_problem(
    workdir: Path, write_toml: Callable[..., Path]
) -> None:
    path = write_toml("[listener]\nport = \"nope\"\n")

    assert load_config(path, {"DICOM_GATEWAY_LISTENER__PORT": "104"}).listener.port == 104


def test_unknown_key_and_section_in_file(workdir: Path, write_toml: Callable[..., Path]) -> None:
    path = write_toml("[listener]\nprot = 11113\n[listner]\nport = 1\n")

    problems = problems_of(path)

    assert problems == (
        f"listener.prot: unknown key (did you mean listener.port?); [listener] has bind, port, "
        f"processes (from {path})",
        f"listner: unknown section (did you mean listener?); the sections are node, listener, "
        f"tls, storage, database, anonymizer, limits, policy, ingest, query, forward, audit, "
        f"status, logging (from {path})",
    )


def test_section_that_is_not_a_table(workdir: Path, write_toml: Callable[..., Path]) -> None:
    path = write_toml("listener = 5\n")

    assert problems_of(path) == (
        f"listener: expected a table ([listener]), got 5 (from {path})",
    )


def test_unknown_key_and_section_in_env(workdir: Path) -> None:
    problems = problems_of(
        environ={"DICOM_GATEWAY_LISTENER__PROT": "1", "DICOM_GATEWAY_SERVER__PORT": "1"}
    )

    assert len(problems) == 2
    assert problems[0].startswith("listener.prot: unknown key (did you mean listener.port?)")
    assert problems[0].endswith("(from DICOM_GATEWAY_LISTENER__PROT)")
    assert problems[1].startswith("server: unknown section")
    assert problems[1].endswith("(from DICOM_GATEWAY_SERVER__PORT)")


def test_unknown_override_key(workdir: Path) -> None:
    problems = problems_of(overrides={"listener.prot": Override(1, "--prot")})

    assert len(problems) == 1
    assert problems[0].startswith("listener.prot: unknown key")
    assert problems[0].endswith("(from --prot)")


def test_long_date_options_are_mutually_exclusive(workdir: Path) -> None:
    raw = "retain_long_full_dates,retain_long_modified_dates"

    problems = problems_of(environ={"DICOM_GATEWAY_ANONYMIZER__OPTIONS": raw})

    assert problems == (
        "anonymizer.options: expected at most one of retain_long_full_dates and "
        "retain_long_modified_dates (they are mutually exclusive), "
        f'got "{raw}" (from DICOM_GATEWAY_ANONYMIZER__OPTIONS)',
    )


def test_one_long_date_option_alone_is_fine(workdir: Path) -> None:
    settings = load_config(None, {"DICOM_GATEWAY_ANONYMIZER__OPTIONS": "retain_long_full_dates"})

    assert settings.anonymizer.options == ("retain_long_full_dates",)


def test_invalid_toml_names_the_path_line_and_column(
    workdir: Path, write_toml: Callable[..., Path]
) -> None:
    path = write_toml('[listener]\nport = 11112\nbind = "127.0.0.1\n')

    problems = problems_of(path)

    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: invalid TOML: ")
    assert "line 3" in problems[0] and "column" in problems[0]


def test_invalid_toml_and_bad_env_are_reported_together(
    workdir: Path, write_toml: Callable[..., Path]
) -> None:
    path = write_toml("[listener\n")

    problems = problems_of(path, {"DICOM_GATEWAY_LISTENER__PORT": "x"})

    assert len(problems) == 2
    assert problems[0].startswith(f"{path}: invalid TOML")
    assert problems[1].startswith("listener.port: expected an integer")


def test_non_utf8_file(workdir: Path, tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[node]\nae_title = "G\xc4TE"\n'.encode("latin-1"))

    (problem,) = problems_of(path)

    assert problem.startswith(f"{path}: invalid TOML: not UTF-8 text")


def test_missing_file(workdir: Path, tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    assert problems_of(path) == (
        f"{path}: cannot read the config file: No such file or directory",
    )


def test_missing_file_named_by_config_env(workdir: Path, tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    (problem,) = problems_of(environ={"DICOM_GATEWAY_CONFIG": str(path)})

    assert problem.startswith(f"{path}: cannot read the config file")
    assert problem.endswith("(from DICOM_GATEWAY_CONFIG)")


def test_directory_instead_of_file(workdir: Path, tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path)

    assert problem.startswith(f"{tmp_path}: cannot read the config file: ")


def test_home_missing_for_tilde(workdir: Path) -> None:
    (problem,) = problems_of(environ={"DICOM_GATEWAY_STORAGE__DATA_DIR": "~/var"})

    assert problem.startswith('storage.data_dir: expected a folder path, got "~/var"; HOME')
    assert problem.endswith("(from DICOM_GATEWAY_STORAGE__DATA_DIR)")


def test_absolute_key_file_stays(workdir: Path) -> None:
    settings = load_config(None, {"DICOM_GATEWAY_ANONYMIZER__KEY_FILE": "/etc/gw/hmac.key"})

    assert settings.anonymizer.key_file == Path("/etc/gw/hmac.key")


def test_config_error_survives_pickling() -> None:
    error = ConfigError(["a: expected x, got 1 (from y)", "b: expected z, got 2 (from y)"])

    copy = pickle.loads(pickle.dumps(error))

    assert copy.problems == error.problems
    assert str(copy) == str(error)


# --- to_dict and redaction -----------------------------------------------------


def test_to_dict_is_json_ready(workdir: Path) -> None:
    data = load_config(None, {}).to_dict()

    assert json.loads(json.dumps(data)) == data
    assert list(data) == ["node", "listener", "tls", "storage", "database", "anonymizer", "limits",
                          "policy", "ingest", "query", "forward", "audit", "status", "logging"]
    assert data["storage"]["data_dir"] == str(workdir / "var")
    assert data["anonymizer"]["options"] == list(DEFAULT_OPTIONS)
    assert data["database"]["effective_url"] == f"sqlite:///{workdir}/var/gateway.sqlite3"


def test_database_password_is_redacted(workdir: Path) -> None:
    url = "postgresql+psycopg://gw:s3cr%40t/x@db.example:5432/gateway"
    settings = load_config(None, {"DICOM_GATEWAY_DATABASE__URL": url})

    assert settings.database_url == url
    shown = settings.to_dict()["database"]
    assert shown["url"] == "postgresql+psycopg://gw:***@db.example:5432/gateway"
    assert shown["effective_url"] == shown["url"]
    assert "s3cr" not in json.dumps(settings.to_dict())
    assert settings.to_dict(redact=False)["database"]["url"] == url


def test_password_is_redacted_in_problem_lines(workdir: Path) -> None:
    (problem,) = problems_of(environ={"DICOM_GATEWAY_DATABASE__URL": "mysql://gw:hunter2@db/x"})

    assert "hunter2" not in problem
    assert 'got "mysql://gw:***@db/x"' in problem


def test_spool_dir_defaults_to_data_dir_spool_and_resolves_against_it(workdir: Path) -> None:
    assert load_config(None, {}).storage.spool_dir == workdir / "var" / "spool"
    relative = load_config(None, {"DICOM_GATEWAY_STORAGE__SPOOL_DIR": "spool-node2"})
    assert relative.storage.spool_dir == workdir / "var" / "spool-node2"
    absolute = load_config(None, {"DICOM_GATEWAY_STORAGE__SPOOL_DIR": "/srv/node2/spool"})
    assert absolute.storage.spool_dir == Path("/srv/node2/spool")


@pytest.mark.parametrize(("value", "reason"), [
    ("1.2.3", "does not end with a dot"),
    ("1.02.3.", "leading zero"),
    ("1.2." + "3" * 40 + ".", "characters long"),
])
def test_a_bad_uid_root_names_key_value_and_what_was_expected(
        workdir: Path, value: str, reason: str) -> None:
    problems = problems_of(overrides={"node.uid_root": value})

    assert len(problems) == 1
    assert problems[0].startswith("node.uid_root: expected a UID root")
    assert value in problems[0] and reason in problems[0]


def test_the_uid_root_given_is_the_one_used(workdir: Path) -> None:
    assert load_config(None, {}, {"node.uid_root": "2.16.840.1.9."}).node.uid_root == \
        "2.16.840.1.9."
