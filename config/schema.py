"""The typed settings: one frozen dataclass per TOML section, and ``Settings``.

These are plain values. They are built only by :func:`config.load_config`,
which has already converted and validated every field: lists are tuples and
paths are absolute :class:`pathlib.Path` objects. The application receives a
``Settings`` and passes the parts it needs down; nothing reads settings from
a global.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = [
    "ANONYMIZER_OPTIONS",
    "SECTIONS",
    "AnonymizerSettings",
    "AuditSettings",
    "DatabaseSettings",
    "ListenerSettings",
    "LoggingSettings",
    "NodeSettings",
    "QuerySettings",
    "ForwardSettings",
    "Settings",
    "StatusSettings",
    "StorageSettings",
    "TLSSettings",
    "redact_url",
]

#: The PS3.15 Table E.1-1 profile options the anonymizer understands, in the
#: order of the table's option columns.
ANONYMIZER_OPTIONS: Final[tuple[str, ...]] = (
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

#: What replaces a secret in :meth:`Settings.to_dict` output.
REDACTED: Final = "***"

_SECRET_SUFFIXES = ("password", "secret")
# scheme://user:password@host..., split the way SQLAlchemy's make_url does.
_URL_PASSWORD = re.compile(r"^(?P<head>[\w+.-]+://[^:/@]*:)[^@]*(?=@)")


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """``[node]``: who this node is on the DICOM network, and the root of the UIDs it makes."""

    ae_title: str
    uid_root: str = "1.2.826.0.1.3680043.8.498."


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    """``[listener]``: where the DICOM listener accepts associations."""

    bind: str
    port: int
    #: receiving processes sharing the port (``SO_REUSEPORT``, gateway.receivers); ``serve``
    #: only: the in-process nodes of the tests and tools receive in one process
    processes: int


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """``[tls]``: the DICOM TLS listener (PS3.15 B.9, the BCP 195 profile) and its identity.

    Paths are absolute (relative ones resolve against ``storage.data_dir``);
    ``None`` when not configured.
    """

    enabled: bool
    port: int
    certificate: Path | None
    private_key: Path | None
    ca_certificates: Path | None
    require_client_certificate: bool
    plain_listener: bool
    handshake_timeout: int


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """``[storage]``: where the node keeps its files (absolute paths).

    ``spool_dir`` is this node's own spool (``data_dir/spool`` unless set).
    """

    data_dir: Path
    spool_dir: Path


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """``[database]``: the index database.

    ``url`` is as configured and may be ``""``; use
    :attr:`Settings.database_url` for the URL to connect to.
    """

    url: str


@dataclass(frozen=True, slots=True)
class AnonymizerSettings:
    """``[anonymizer]``: the de-identification profile (PS3.15 Annex E)."""

    options: tuple[str, ...]
    safe_private_creators: tuple[str, ...]
    risky_sop_classes: tuple[str, ...]
    pseudonym_prefix: str
    key_env: str
    key_file: Path
    residual_phi_gate: bool
    max_sequence_depth: int


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    """``[limits]``: what one peer may cost the node (timeouts in seconds)."""

    max_associations: int
    acse_timeout: int
    dimse_timeout: int
    network_timeout: int
    max_pdu: int
    max_dataset_mb: int


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """``[policy]``: who may store without being a registered peer."""

    loopback_store_open: bool
    store_open: bool


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """``[ingest]``: the workers that de-identify what the spool holds.

    ``nice`` is added to each worker process's niceness (``nice(2)``): where the
    cores are busy, the receiving processes, which a sender waits on, run first.
    """

    workers: int
    nice: int = 10


@dataclass(frozen=True, slots=True)
class QuerySettings:
    """``[query]``: what one C-FIND may cost (RELIABILITY.md T23)."""

    max_results: int


@dataclass(frozen=True, slots=True)
class ForwardSettings:
    """``[forward]``: the forward queue's default retry policy, leases, polling,
    confirmation and threads.

    ``commit_timeout_seconds``: how long the forwarder waits for a Storage
    Commitment result (PS3.4 J.3) before it falls back to the next way of
    confirming delivery (:mod:`gateway.confirm`). ``max_workers`` bounds the
    associations one node's forwarder has open at once, over all destinations
    (each destination also within its own ``max_associations``).
    """

    max_attempts: int
    first_delay_seconds: int
    backoff_multiplier: int
    max_delay_seconds: int
    lease_seconds: int
    poll_seconds: int
    stable_after_seconds: int
    commit_timeout_seconds: int
    max_workers: int


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """``[audit]``: where the audit trail goes besides the database."""

    syslog: str


@dataclass(frozen=True, slots=True)
class StatusSettings:
    """``[status]``: when ``dicom-gateway status`` calls the node unhealthy."""

    min_free_disk_mb: int
    max_failed_jobs: int
    max_pending_age_seconds: int
    max_spool_depth: int


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """``[logging]``: the node's log level."""

    level: str


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole effective configuration of one node.

    Attributes
    ----------
    node, listener, tls, storage, database, anonymizer, limits, policy, ingest, query, forward,
    audit, status, logging
        One value per TOML section.
    config_file : pathlib.Path | None
        The user file that was read, or ``None`` when only the embedded
        default (and the environment) applied.
    sources : tuple[tuple[str, str], ...]
        ``("section.key", "where it came from")`` for every key, for example
        ``("listener.port", "DICOM_GATEWAY_LISTENER__PORT")``.
    """

    node: NodeSettings
    listener: ListenerSettings
    tls: TLSSettings
    storage: StorageSettings
    database: DatabaseSettings
    anonymizer: AnonymizerSettings
    limits: LimitsSettings
    policy: PolicySettings
    ingest: IngestSettings
    query: QuerySettings
    forward: ForwardSettings
    audit: AuditSettings
    status: StatusSettings
    logging: LoggingSettings
    config_file: Path | None = field(default=None, compare=False)
    sources: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)

    @property
    def database_url(self) -> str:
        """The database URL to connect to.

        ``database.url`` when it is set, otherwise SQLite in
        ``<data_dir>/gateway.sqlite3`` (an absolute path, so the URL has
        four slashes: ``sqlite:////srv/gateway/var/gateway.sqlite3``).
        """
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.storage.data_dir / 'gateway.sqlite3').as_posix()}"

    def source_of(self, key: str) -> str:
        """Say where ``key`` (``"section.key"``) got its value.

        Returns
        -------
        str
            A path, an environment variable name, a flag, or
            ``"the embedded default"``.
        """
        return dict(self.sources).get(key, "the embedded default")

    def to_dict(self, redact: bool = True) -> dict[str, dict[str, object]]:
        """Return the effective configuration as JSON-ready data.

        Sections and keys keep their TOML names in schema order; tuples
        become lists and paths become strings. ``database`` also carries
        ``effective_url``, the URL the node connects to.

        Parameters
        ----------
        redact : bool
            When true (the default), replace the value of any key ending in
            ``password`` or ``secret`` and the password part of any URL with
            ``***``. Nothing secret belongs in the configuration, but a
            database URL may carry a password from the environment.

        Returns
        -------
        dict[str, dict[str, object]]
            ``{"section": {"key": value}}``.
        """
        result: dict[str, dict[str, object]] = {}
        for section_name in SECTIONS:
            section = getattr(self, section_name)
            values: dict[str, object] = {}
            for item in dataclasses.fields(section):
                values[item.name] = _plain(getattr(section, item.name))
            if section_name == "database":
                values["effective_url"] = self.database_url
            if redact:
                values = {key: _redact(key, value) for key, value in values.items()}
            result[section_name] = values
        return result


#: The section names, in the order of ``Settings`` and ``default.toml``.
SECTIONS: Final[tuple[str, ...]] = (
    "node",
    "listener",
    "tls",
    "storage",
    "database",
    "anonymizer",
    "limits",
    "policy",
    "ingest",
    "query",
    "forward",
    "audit",
    "status",
    "logging",
)


def _plain(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def _redact(key: str, value: object) -> object:
    if key.endswith(_SECRET_SUFFIXES) and value not in ("", None):
        return REDACTED
    if isinstance(value, str):
        return redact_url(value)
    return value


def redact_url(url: str) -> str:
    """Replace the password in a URL's user information with ``***``.

    ``postgresql+psycopg://gw:s3cret@db/gateway`` becomes
    ``postgresql+psycopg://gw:***@db/gateway``. A string that is not a URL
    with a password comes back unchanged.

    Parameters
    ----------
    url : str
        Any string.

    Returns
    -------
    str
        The string with the password part, if any, redacted.
    """
    return _URL_PASSWORD.sub(rf"\g<head>{REDACTED}", url, count=1)
