"""Configuration of a dicom-gateway node: schema, loading and validation.

``load_config(path, environ, overrides)`` merges the embedded
``default.toml``, a user TOML file, ``DICOM_GATEWAY_<SECTION>__<KEY>``
environment variables and command-line overrides (each later one wins),
validates every value and returns a frozen :class:`Settings`, or raises one
:class:`ConfigError` listing every problem. Standard library only; imports no
other project package.
"""

from .errors import ConfigError
from .loader import CONFIG_ENV, ENV_PREFIX, LOG_LEVELS, Override, load_config
from .schema import (
    ANONYMIZER_OPTIONS,
    AnonymizerSettings,
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
    StorageSettings,
    TLSSettings,
)

__all__ = [
    "ANONYMIZER_OPTIONS",
    "CONFIG_ENV",
    "ENV_PREFIX",
    "LOG_LEVELS",
    "AnonymizerSettings",
    "ConfigError",
    "DatabaseSettings",
    "IngestSettings",
    "LimitsSettings",
    "ListenerSettings",
    "LoggingSettings",
    "NodeSettings",
    "Override",
    "PolicySettings",
    "QuerySettings",
    "ForwardSettings",
    "Settings",
    "StorageSettings",
    "TLSSettings",
    "load_config",
]
