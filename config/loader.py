"""Load the configuration: merge the layers, convert types, collect all errors.

Precedence, lowest first: the embedded ``config/default.toml``, the user
TOML file, environment variables ``DICOM_GATEWAY_<SECTION>__<KEY>``, and
command-line overrides. Only the winning value of each key is converted and
checked; every problem (unknown sections and keys in any layer, unreadable or
invalid files, bad values) is collected and raised as one
:class:`~config.errors.ConfigError`.

This module never reads ``os.environ``: the caller passes the environment.
"""

from __future__ import annotations

import difflib
import importlib.resources
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._keys import LOG_LEVELS, SPECS, Given, Invalid, coerce, show
from .errors import ConfigError
from .schema import (
    AnonymizerSettings,
    AuditSettings,
    DatabaseSettings,
    ForwardSettings,
    IngestSettings,
    LimitsSettings,
    ListenerSettings,
    LoggingSettings,
    NodeSettings,
    PolicySettings,
    QuerySettings,
    Settings,
    StatusSettings,
    StorageSettings,
    TLSSettings,
)

__all__ = ["CONFIG_ENV", "ENV_PREFIX", "LOG_LEVELS", "Override", "load_config"]

#: Environment variables ``<ENV_PREFIX><SECTION>__<KEY>`` override one key.
ENV_PREFIX = "DICOM_GATEWAY_"
#: The environment variable naming the user file when no path is given.
CONFIG_ENV = "DICOM_GATEWAY_CONFIG"

_EMBEDDED = "the embedded default"
_EXCLUSIVE_DATES = ("retain_long_full_dates", "retain_long_modified_dates")


@dataclass(frozen=True, slots=True)
class Override:
    """A command-line value for one key, with the flag that set it.

    ``load_config(overrides={"listener.port": Override(11113, "--port")})``
    reports a bad value as ``(from --port)``. A plain value in ``overrides``
    works too and is reported as ``(from the command line)``.
    """

    value: object
    flag: str


def load_config(
    path: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Load, merge and validate the configuration.

    Parameters
    ----------
    path : pathlib.Path | str | None
        The user TOML file. When ``None``, ``environ["DICOM_GATEWAY_CONFIG"]``
        names it if set and non-empty; otherwise only the embedded default
        applies. A relative path is read from the current working directory.
    environ : Mapping[str, str] | None
        The environment (the CLI passes ``os.environ``); ``None`` means an
        empty one. Variables ``DICOM_GATEWAY_<SECTION>__<KEY>`` override one
        key each; other ``DICOM_GATEWAY_*`` names, without the double
        underscore, are not keys and are ignored here.
    overrides : Mapping[str, object] | None
        Command-line values keyed ``"section.key"``; they win over
        everything. A value may be an :class:`Override` to name its flag.
        ``None`` values are skipped (a flag that was not given). Strings are
        parsed like environment values.

    Returns
    -------
    Settings
        Frozen, fully validated settings. ``storage.data_dir`` is absolute
        (relative to the current working directory); ``anonymizer.key_file``
        is absolute (relative to ``data_dir``).

    Raises
    ------
    ConfigError
        With one line per problem, all problems at once: unknown sections or
        keys in any layer, a missing, unreadable or invalid user file, values
        of the wrong type or outside their rule.
    """
    env: Mapping[str, str] = environ if environ is not None else {}
    problems: list[str] = []
    given: dict[str, Given] = {}

    default_doc = _parse_toml(_embedded_default(), _EMBEDDED, problems)
    given.update(_from_toml(default_doc, _EMBEDDED, problems))

    config_file: Path | None = None
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
        origin = f" (from {CONFIG_ENV})"
    else:
        origin = ""
    if path is not None:
        config_file = Path(path)
        user_doc = _read_user_file(config_file, origin, problems)
        given.update(_from_toml(user_doc, str(config_file), problems))

    given.update(_from_environ(env, problems))
    given.update(_from_overrides(overrides or {}, problems))

    values = _convert_all(given, problems)
    data_dir = _resolve("storage.data_dir", Path.cwd(), values, given, env, problems)
    _resolve("anonymizer.key_file", data_dir, values, given, env, problems)
    if values.get("storage.spool_dir") == "":
        values["storage.spool_dir"] = data_dir / "spool"
    else:
        _resolve("storage.spool_dir", data_dir, values, given, env, problems)
    for name in _TLS_FILES:
        if values.get(name):
            _resolve(name, data_dir, values, given, env, problems)
    _check_tls(values, given, problems)
    if problems:
        raise ConfigError(problems)
    return _build(values, given, config_file)


_TLS_FILES = ("tls.certificate", "tls.private_key", "tls.ca_certificates")


def _check_tls(values: Mapping[str, object], given: Mapping[str, Given],
               problems: list[str]) -> None:
    """The TLS keys that only make sense together: an identity to serve, authorities to verify."""
    if values.get("tls.enabled") is True:
        for name in ("tls.certificate", "tls.private_key"):
            if values.get(name) == "":
                problems.append(_bad_value(name, "a PEM file path when tls.enabled is true",
                                           given[name]))
    if values.get("tls.require_client_certificate") is True and values.get(
            "tls.ca_certificates") == "":
        problems.append(_bad_value(
            "tls.ca_certificates",
            "a PEM file of the authorities that sign client certificates when "
            "tls.require_client_certificate is true", given["tls.ca_certificates"]))


def _embedded_default() -> str:
    package = __name__.rpartition(".")[0]
    return importlib.resources.files(package).joinpath("default.toml").read_text("utf-8")


def _parse_toml(text: str, label: str, problems: list[str]) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        problems.append(f"{label}: invalid TOML: {error}")
        return {}


def _read_user_file(path: Path, origin: str, problems: list[str]) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as error:
        reason = error.strerror or str(error)
        problems.append(f"{path}: cannot read the config file: {reason}{origin}")
        return {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        problems.append(f"{path}: invalid TOML: not UTF-8 text (byte {error.start}){origin}")
        return {}
    return _parse_toml(text, str(path), problems)


def _from_toml(doc: Mapping[str, Any], source: str, problems: list[str]) -> dict[str, Given]:
    layer: dict[str, Given] = {}
    for section, table in doc.items():
        if section not in SPECS:
            problems.append(_unknown_section(section, source))
            continue
        if not isinstance(table, dict):
            problems.append(
                f"{section}: expected a table ([{section}]), got {show(table)} (from {source})"
            )
            continue
        for key, value in table.items():
            name = f"{section}.{key}"
            if key not in SPECS[section]:
                problems.append(_unknown_key(section, key, source))
            else:
                layer[name] = Given(value, source, is_text=False)
    return layer


def _from_environ(environ: Mapping[str, str], problems: list[str]) -> dict[str, Given]:
    layer: dict[str, Given] = {}
    for variable, raw in sorted(environ.items()):
        if not variable.startswith(ENV_PREFIX) or "__" not in variable[len(ENV_PREFIX) :]:
            continue
        section, _, key = variable[len(ENV_PREFIX) :].partition("__")
        section, key = section.lower(), key.lower()
        if section not in SPECS:
            problems.append(_unknown_section(section, variable))
        elif key not in SPECS[section]:
            problems.append(_unknown_key(section, key, variable))
        else:
            layer[f"{section}.{key}"] = Given(raw, variable, is_text=True)
    return layer


def _from_overrides(overrides: Mapping[str, object], problems: list[str]) -> dict[str, Given]:
    layer: dict[str, Given] = {}
    for name, value in overrides.items():
        source = "the command line"
        if isinstance(value, Override):
            source = value.flag
            value = value.value
        if value is None:
            continue
        section, _, key = name.partition(".")
        if section not in SPECS:
            problems.append(_unknown_section(section, source))
        elif key not in SPECS[section]:
            problems.append(_unknown_key(section, key, source))
        else:
            layer[name] = Given(value, source, is_text=isinstance(value, str))
    return layer


def _unknown_section(section: str, source: str) -> str:
    hint = _did_you_mean(section, SPECS)
    known = ", ".join(SPECS)
    return f"{section}: unknown section{hint}; the sections are {known} (from {source})"


def _unknown_key(section: str, key: str, source: str) -> str:
    hint = _did_you_mean(key, SPECS[section], prefix=f"{section}.")
    known = ", ".join(SPECS[section])
    return f"{section}.{key}: unknown key{hint}; [{section}] has {known} (from {source})"


def _did_you_mean(word: str, known: Mapping[str, object], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _convert_all(given: Mapping[str, Given], problems: list[str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for section, specs in SPECS.items():
        for key, spec in specs.items():
            name = f"{section}.{key}"
            item = given.get(name)
            if item is None:
                problems.append(f"{name}: missing from {_EMBEDDED}")
                continue
            try:
                value = coerce(spec.kind, item)
            except Invalid as bad:
                problems.append(_bad_value(name, spec.expected, item, bad.reason))
                continue
            ok, reason = spec.check(value) if spec.check else (True, "")
            if not ok:
                problems.append(_bad_value(name, spec.expected, item, reason))
                continue
            values[name] = value
    options = values.get("anonymizer.options")
    if isinstance(options, tuple) and all(option in options for option in _EXCLUSIVE_DATES):
        problems.append(
            _bad_value(
                "anonymizer.options",
                f"at most one of {' and '.join(_EXCLUSIVE_DATES)} (they are mutually exclusive)",
                given["anonymizer.options"],
            )
        )
    return values


def _bad_value(name: str, expected: str, item: Given, reason: str = "") -> str:
    detail = f"; {reason}" if reason else ""
    return f"{name}: expected {expected}, got {show(item.value)}{detail} (from {item.source})"


def _resolve(
    name: str,
    base: Path,
    values: dict[str, object],
    given: Mapping[str, Given],
    environ: Mapping[str, str],
    problems: list[str],
) -> Path:
    """Make the path at ``values[name]`` absolute against ``base``, in place.

    A leading ``~`` expands to ``environ["HOME"]``. Returns the new path, or
    ``base`` when the value is missing or cannot be resolved (the problem
    is then already recorded).
    """
    raw = values.get(name)
    if not isinstance(raw, str):
        return base
    if raw == "~" or raw.startswith("~/"):
        home = environ.get("HOME")
        if not home:
            spec = SPECS[name.partition(".")[0]][name.partition(".")[2]]
            reason = 'HOME is not set, so "~" cannot be expanded'
            problems.append(_bad_value(name, spec.expected, given[name], reason))
            return base
        raw = home + raw[1:]
    path = Path(raw)
    resolved = path if path.is_absolute() else base / path
    values[name] = resolved
    return resolved


def _build(
    values: Mapping[str, Any], given: Mapping[str, Given], config_file: Path | None
) -> Settings:
    return Settings(
        node=NodeSettings(ae_title=values["node.ae_title"], uid_root=values["node.uid_root"]),
        listener=ListenerSettings(bind=values["listener.bind"], port=values["listener.port"],
                                  processes=values["listener.processes"] or _cores()),
        tls=TLSSettings(
            enabled=values["tls.enabled"],
            port=values["tls.port"],
            certificate=values["tls.certificate"] or None,
            private_key=values["tls.private_key"] or None,
            ca_certificates=values["tls.ca_certificates"] or None,
            require_client_certificate=values["tls.require_client_certificate"],
            plain_listener=values["tls.plain_listener"],
            handshake_timeout=values["tls.handshake_timeout"],
        ),
        storage=StorageSettings(data_dir=values["storage.data_dir"],
                                spool_dir=values["storage.spool_dir"]),
        database=DatabaseSettings(url=values["database.url"]),
        anonymizer=AnonymizerSettings(
            options=values["anonymizer.options"],
            safe_private_creators=values["anonymizer.safe_private_creators"],
            risky_sop_classes=values["anonymizer.risky_sop_classes"],
            pseudonym_prefix=values["anonymizer.pseudonym_prefix"],
            key_env=values["anonymizer.key_env"],
            key_file=values["anonymizer.key_file"],
            residual_phi_gate=values["anonymizer.residual_phi_gate"],
            max_sequence_depth=values["anonymizer.max_sequence_depth"],
        ),
        limits=LimitsSettings(
            max_associations=values["limits.max_associations"],
            acse_timeout=values["limits.acse_timeout"],
            dimse_timeout=values["limits.dimse_timeout"],
            network_timeout=values["limits.network_timeout"],
            max_pdu=values["limits.max_pdu"],
            max_dataset_mb=values["limits.max_dataset_mb"],
        ),
        policy=PolicySettings(
            loopback_store_open=values["policy.loopback_store_open"],
            store_open=values["policy.store_open"],
        ),
        ingest=IngestSettings(workers=values["ingest.workers"] or _default_workers(),
                              nice=values["ingest.nice"]),
        query=QuerySettings(max_results=values["query.max_results"]),
        forward=ForwardSettings(
            max_attempts=values["forward.max_attempts"],
            first_delay_seconds=values["forward.first_delay_seconds"],
            backoff_multiplier=values["forward.backoff_multiplier"],
            max_delay_seconds=values["forward.max_delay_seconds"],
            lease_seconds=values["forward.lease_seconds"],
            poll_seconds=values["forward.poll_seconds"],
            stable_after_seconds=values["forward.stable_after_seconds"],
            commit_timeout_seconds=values["forward.commit_timeout_seconds"],
            max_workers=values["forward.max_workers"],
        ),
        audit=AuditSettings(syslog=values["audit.syslog"]),
        status=StatusSettings(
            min_free_disk_mb=values["status.min_free_disk_mb"],
            max_failed_jobs=values["status.max_failed_jobs"],
            max_pending_age_seconds=values["status.max_pending_age_seconds"],
            max_spool_depth=values["status.max_spool_depth"],
        ),
        logging=LoggingSettings(level=values["logging.level"].upper()),
        config_file=Path.cwd() / config_file if config_file else None,
        sources=tuple(
            (name, item.source) for name, item in given.items() if item.source != _EMBEDDED
        ),
    )


def _cores() -> int:
    """``listener.processes = 0``: one receiving process per CPU core."""
    return os.cpu_count() or 1


def _default_workers() -> int:
    """``ingest.workers = 0``: one worker per CPU core but one, left to the receiver."""
    return max(1, (os.cpu_count() or 2) - 1)
