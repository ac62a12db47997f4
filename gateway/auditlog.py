"""The audit trail as syslog: one RFC 5424 line per record, shaped after PS3.15 A.5.

The database keeps the audit trail (:mod:`storage.audit`); with
``audit.syslog = "udp://HOST:PORT"`` every committed record is also sent as
one RFC 5424 message over UDP (RFC 5426), to a collector a privacy officer
already reads. Each message carries one structured data element named
after the DICOM Audit Message (PS3.15 A.5.1) with the fields of its event:

- ``EventID``, ``EventActionCode``, ``EventOutcomeIndicator`` and, where the
  standard has one, ``EventTypeCode`` (PS3.15 A.5.3, the codes of PS3.16
  CID 400 Audit Event ID, CID 401-403 types, scheme DCM);
- ``UserID``: who, a calling AE title or the operating-system user of a
  command; ``AuditSourceID``: this node's AE title (A.5.2);
- ``ParticipantObjectID``: the study concerned, its remapped
  StudyInstanceUID (never an original value: no PHI leaves the node);
- ``Event``: the gateway's own event name, and ``RecordID``, its row in the
  audit table.

The free text after the element is the record's ``detail`` (never PHI
either). Facility 10 (security/authorization, as IHE ATNA uses), severity 5
(notice) for a success and 4 (warning) for a failure. The SD-ID is
``dicomAudit@32473``: 32473 is the enterprise number RFC 5612 sets aside for
documentation, as no number is registered for this software. Sending is
best effort: a UDP datagram that cannot be sent is logged, the record stays
in the database, and nothing the node does waits for the collector.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC
from typing import Final
from urllib.parse import urlsplit

from storage.models import AuditOutcome
from storage.records import AuditEvent

__all__ = ["AUDIT_CODES", "AuditCode", "SyslogSink", "code_of", "format_message", "parse_target"]

logger = logging.getLogger(__name__)

#: RFC 5424 facility 10: security/authorization messages
FACILITY: Final = 10
_NOTICE: Final = 5
_WARNING: Final = 4
SD_ID: Final = "dicomAudit@32473"
APP_NAME: Final = "dicom-gateway"
#: the longest datagram sent; RFC 5426 asks receivers to take at least 480 octets, most take more
_MAX_DATAGRAM: Final = 8192


@dataclass(frozen=True, slots=True)
class AuditCode:
    """The PS3.15 A.5.3 shape of one gateway event (CID 400, CID 401-403; action C/R/U/D/E)."""

    event_id: str
    display: str
    action: str
    event_type: str = ""


_APP = ("110100", "Application Activity")
_TRANSFERRED = ("110104", "DICOM Instances Transferred")
_ACCESSED = ("110103", "DICOM Instances Accessed")
_ALERT = ("110113", "Security Alert")
_NODE_AUTH = "110126"  # Node Authentication
_NETWORK_CONFIG = "110128"  # Network Configuration
_SECURITY_CONFIG = "110129"  # Security Configuration
_RESTRICTED = "110132"  # Use of Restricted Function

#: every event the gateway records, and its PS3.15 A.5.3 shape
AUDIT_CODES: Final[dict[str, AuditCode]] = {
    "node-start": AuditCode(*_APP, "E", "110120"),  # Application Start
    "node-stop": AuditCode(*_APP, "E", "110121"),  # Application Stop
    "association-accepted": AuditCode(*_ALERT, "E", _NODE_AUTH),
    "association-rejected": AuditCode(*_ALERT, "E", _NODE_AUTH),
    "store": AuditCode(*_TRANSFERRED, "C"),
    "store-refused": AuditCode(*_TRANSFERRED, "C"),
    "quarantine": AuditCode(*_TRANSFERRED, "C"),
    "import": AuditCode("110107", "Import", "C"),
    "request-refused": AuditCode(*_ALERT, "E", _RESTRICTED),
    "find": AuditCode("110112", "Query", "E"),
    "find-refused": AuditCode(*_ALERT, "E", _RESTRICTED),
    "move": AuditCode(*_TRANSFERRED, "R"),
    "get": AuditCode(*_TRANSFERRED, "R"),
    "move-refused": AuditCode(*_ALERT, "E", _RESTRICTED),
    "get-refused": AuditCode(*_ALERT, "E", _RESTRICTED),
    "commitment-request-refused": AuditCode(*_ALERT, "E", _RESTRICTED),
    "commitment-report-refused": AuditCode(*_ALERT, "E", _RESTRICTED),
    "route": AuditCode(*_ACCESSED, "E"),
    "forward": AuditCode(*_TRANSFERRED, "R"),
    "forward-queued": AuditCode(*_ACCESSED, "E"),
    "forward-retry": AuditCode(*_ACCESSED, "E"),
    "forward-cancel": AuditCode(*_ACCESSED, "E"),
    "reidentify": AuditCode("110110", "Patient Record", "R"),
    "quarantine-release": AuditCode(*_ACCESSED, "U"),
    "study-delete": AuditCode("110105", "DICOM Study Deleted", "D"),
    "peer-add": AuditCode(*_ALERT, "C", _SECURITY_CONFIG),
    "peer-update": AuditCode(*_ALERT, "U", _SECURITY_CONFIG),
    "peer-remove": AuditCode(*_ALERT, "D", _SECURITY_CONFIG),
    "route-add": AuditCode(*_ALERT, "C", _NETWORK_CONFIG),
    "route-update": AuditCode(*_ALERT, "U", _NETWORK_CONFIG),
    "route-remove": AuditCode(*_ALERT, "D", _NETWORK_CONFIG),
    "route-enable": AuditCode(*_ALERT, "U", _NETWORK_CONFIG),
    "route-disable": AuditCode(*_ALERT, "U", _NETWORK_CONFIG),
}
#: what an event not in the table is sent as
_OTHER: Final = AuditCode(*_ALERT, "E", _RESTRICTED)


def code_of(event: str) -> AuditCode:
    """The PS3.15 A.5.3 shape of a gateway event (a Security Alert when it has none of its own)."""
    return AUDIT_CODES.get(event, _OTHER)


def parse_target(url: str) -> tuple[str, int]:
    """``udp://HOST:PORT`` as (host, port).

    Raises
    ------
    ValueError
        When the value is not a UDP URL with a host and a port 1-65535.
    """
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "udp" or not parts.hostname or port is None or not 0 < port < 65536 \
            or parts.path not in ("", "/"):
        raise ValueError(f"expected udp://HOST:PORT, got {url!r}")
    return parts.hostname, port


def _param(value: str) -> str:
    """An SD-PARAM value (RFC 5424 6.3.3): '"', '\\' and ']' escaped, kept printable ASCII."""
    text = "".join(c if " " <= c <= "~" else "?" for c in value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_field(value: str, limit: int) -> str:
    """A header field (RFC 5424 6.2): printable ASCII without spaces, ``-`` when empty."""
    text = "".join(c for c in value if "!" <= c <= "~")[:limit]
    return text or "-"


def format_message(item: AuditEvent, *, hostname: str, source_id: str,
                   procid: str = "-") -> bytes:
    """One RFC 5424 message for one audit record.

    Parameters
    ----------
    item : AuditEvent
        The committed record.
    hostname : str
        The HOSTNAME field (RFC 5424 6.2.4).
    source_id : str
        The AuditSourceID (PS3.15 A.5.2): this node's AE title.
    procid : str
        The PROCID field.

    Returns
    -------
    bytes
        ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG``, ASCII.
    """
    code = code_of(item.event)
    failed = item.outcome is AuditOutcome.FAILURE
    pri = FACILITY * 8 + (_WARNING if failed else _NOTICE)
    stamp = item.at.astimezone(UTC).isoformat(timespec="microseconds")
    params = [
        ("EventID", code.event_id), ("EventIDDisplay", code.display),
        ("EventActionCode", code.action), ("EventOutcomeIndicator", "4" if failed else "0"),
    ]
    if code.event_type:
        params.append(("EventTypeCode", code.event_type))
    params += [("UserID", item.actor), ("AuditSourceID", source_id), ("Event", item.event),
               ("RecordID", str(item.id))]
    if item.study_instance_uid:
        params.append(("ParticipantObjectID", item.study_instance_uid))
    element = f"[{SD_ID} " + " ".join(f'{name}="{_param(value)}"' for name, value in params) + "]"
    header = (f"<{pri}>1 {stamp} {_header_field(hostname, 255)} {APP_NAME} "
              f"{_header_field(procid, 128)} {_header_field(code.event_id, 32)}")
    detail = "".join(c if " " <= c <= "~" else "?" for c in item.detail)
    line = f"{header} {element}" + (f" {detail}" if detail else "")
    return line.encode("ascii")[:_MAX_DATAGRAM]


class SyslogSink:
    """Send each committed audit record to a syslog collector over UDP (see the module notes).

    Parameters
    ----------
    url : str
        ``udp://HOST:PORT``.
    source_id : str
        This node's AE title (the AuditSourceID).
    """

    def __init__(self, url: str, source_id: str) -> None:
        self.host, self.port = parse_target(url)
        self.source_id = source_id
        self.hostname = socket.gethostname()
        self._warned = False
        self._address: tuple[int, tuple[str, int]] | None = None  # resolved once, again on error

    def __call__(self, item: AuditEvent) -> None:
        message = format_message(item, hostname=self.hostname, source_id=self.source_id,
                                 procid=str(os.getpid()))
        try:
            if self._address is None:
                found = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
                self._address = found[0], (str(found[4][0]), int(found[4][1]))
            family, address = self._address
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.sendto(message, address)
        except OSError as exc:
            self._address = None
            if not self._warned:  # once: a collector that is away must not flood the log
                logger.warning("audit syslog to=%s:%d failed reason=%r", self.host, self.port,
                               exc.__class__.__name__)
                self._warned = True
            return
        self._warned = False
