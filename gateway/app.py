"""The composition root: one node's parts, built once from its settings. Read this first.

``build_app(settings, environ)`` opens the database (migrating it to the
newest schema), the file store and the spool under ``storage.data_dir``,
reads the de-identification secret and builds the profile and pseudonym
space; with ``audit.syslog`` set, committed audit records are also sent to
that collector (:mod:`gateway.auditlog`). Nothing here listens or starts
threads: :mod:`gateway.node` does that for ``serve``, and the CLI commands
and the tests use the same ``App``.

pynetdicom's process-wide switches are set once, here:
``STORE_RECV_CHUNKED_DATASET`` (received datasets stream to a file instead
of memory), ``STORE_SEND_CHUNKED_DATASET`` (a C-STORE given a file path
sends the file's bytes as they are, never decoded: the forwarder),
``LOG_REQUEST_IDENTIFIERS``/``LOG_RESPONSE_IDENTIFIERS`` off
(identifiers carry PHI), ``ENFORCE_UID_CONFORMANCE`` on (a malformed UID in a
command is refused) and ``UNRESTRICTED_STORAGE_SERVICE`` off (only known
storage SOP classes are accepted).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Protocol

from pynetdicom import _config as pynetdicom_config, timer as pynetdicom_timer
from sqlalchemy import Engine

from anonymizer import KeyedPseudonyms, Profile
from config import Settings
import storage.audit as audit
from storage.crypto import MapCipher
from storage.db import make_engine
from storage.filestore import FileStore
from storage.schema import upgrade
from storage.spool import Spool

from .auditlog import SyslogSink
from .deid import build_lookup, build_profile, load_secret

__all__ = ["App", "build_app", "configure_pynetdicom"]

logger = logging.getLogger(__name__)


def configure_pynetdicom() -> None:
    """pynetdicom's process-wide switches, as the node needs them."""
    pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False
    pynetdicom_config.ENFORCE_UID_CONFORMANCE = True
    pynetdicom_config.UNRESTRICTED_STORAGE_SERVICE = False
    # pynetdicom's Timer (the ARTIM timer, PS3.8 9.1.5, and the idle network_timeout)
    # measures with time.time(): a wall-clock step forward aborted every association in
    # use at once, a step back kept an idle one for the length of the step (RELIABILITY
    # T30). It only subtracts two of its own readings, so the monotonic clock serves as is.
    setattr(pynetdicom_timer, "time", SimpleNamespace(time=time.monotonic))


class Wake(Protocol):
    """What rings idle ingest workers: a threading.Event or a gateway.doorbell.Doorbell."""

    def set(self) -> None: ...


@dataclass
class App:
    """One node: its settings and the parts every command and handler uses."""

    settings: Settings
    engine: Engine
    store: FileStore
    spool: Spool
    profile: Profile
    lookup: KeyedPseudonyms
    cipher: MapCipher
    #: the pseudonym space of a destination whose space is its own (gateway.forwarder)
    destination_space: Callable[[str], KeyedPseudonyms]
    #: the profile that re-keys stored instances for such a destination: the same
    #: options, without the residual-PHI gate, which already passed this content at
    #: ingest (a second pass would take the node's own pseudonyms for originals)
    rekey_profile: Profile
    #: set when the spool received something, so that idle workers wake at once (the
    #: worker processes' doorbell when they run apart: gateway.workers, gateway.doorbell)
    wake: Wake = field(default_factory=threading.Event)

    @property
    def data_dir(self) -> Path:
        return self.settings.storage.data_dir

    def close(self) -> None:
        self.engine.dispose()


def build_app(settings: Settings, environ: Mapping[str, str]) -> App:
    """Build the node's parts from its settings (see the module docstring).

    Raises
    ------
    gateway.secrets.SecretError
        When the secret cannot be read.
    storage.errors.StorageError
        When the database or the data folder cannot be opened.
    """
    configure_pynetdicom()
    data_dir = settings.storage.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    key = load_secret(settings.anonymizer, environ)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    if settings.audit.syslog:
        audit.subscribe(engine, SyslogSink(settings.audit.syslog, settings.node.ae_title))

    @functools.cache
    def destination_space(slug: str) -> KeyedPseudonyms:
        """A space keyed for one destination: unlinkable to the node's and to the others'."""
        return build_lookup(settings.anonymizer, hmac.new(
            key, b"destination\0" + slug.encode("utf-8"), hashlib.sha256).digest())

    return App(
        settings=settings,
        engine=engine,
        store=FileStore(data_dir / "store"),
        spool=Spool(settings.storage.spool_dir),
        profile=build_profile(settings.anonymizer),
        lookup=build_lookup(settings.anonymizer, key),
        # the map's own key, derived from the secret: kept outside the database
        cipher=MapCipher(hmac.new(key, b"pseudonym-map", hashlib.sha256).digest()),
        destination_space=destination_space,
        rekey_profile=build_profile(dataclasses.replace(settings.anonymizer,
                                                        residual_phi_gate=False)),
    )
