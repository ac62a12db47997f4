"""Auditing a DIMSE request whose command carries a malformed UID (RELIABILITY T11, I5).

pynetdicom decodes a command set strictly (``_config.ENFORCE_UID_CONFORMANCE``):
a request whose Affected or Requested SOP Class/Instance UID is not a UID
as PS3.5 9.1 defines it (digits and dots, no leading zeros, at most 64
characters) cannot become a DIMSE primitive, and its provider aborts the
association (``dimse.py``, Evt19: A-ABORT, PS3.8 9.2 AA-8). No handler of
ours runs then, so the refusal would leave no audit record. On
EVT_DIMSE_RECV (the whole message decoded, before pynetdicom converts it)
the command's UIDs are checked the same way and a malformed one is audited
first: ``store-refused`` for a C-STORE-RQ, ``request-refused`` for any
other message, the calling AE title as the actor. The detail names the
attribute, never its value (a peer's bytes, possibly a path). The abort
itself stays pynetdicom's.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from pydicom.dataelem import RawDataElement

from .app import App
from .audittrail import record_quietly
from .receive import is_valid_uid

__all__ = ["audit_malformed_command"]

logger = logging.getLogger(__name__)

#: the UIDs of a command set (PS3.7 E.1-1) that pynetdicom validates as it converts it
_COMMAND_UIDS: Final = {
    0x00000002: "AffectedSOPClassUID", 0x00000003: "RequestedSOPClassUID",
    0x00001000: "AffectedSOPInstanceUID", 0x00001001: "RequestedSOPInstanceUID",
}
_C_STORE_RQ: Final = 0x0001
_COMMAND_FIELD: Final = 0x00000100


def _text(element: Any) -> str:
    """The element's value as text, without pydicom validating (and warning about) it."""
    value = element.value
    if isinstance(element, RawDataElement) or isinstance(value, bytes):
        return bytes(value or b"").decode("latin-1").rstrip("\0 ")
    return str(value or "")


def _malformed(command: Any) -> str | None:
    for tag, keyword in _COMMAND_UIDS.items():
        if tag in command and not is_valid_uid(_text(command.get_item(tag))):
            return keyword
    return None


def audit_malformed_command(event: Any, app: App) -> None:
    """EVT_DIMSE_RECV: audit a request whose command has a malformed UID (see the module notes).

    Written before returning (this is the association's DUL thread, and
    pynetdicom aborts the association right after), once per association.
    """
    command = getattr(event.message, "command_set", None)
    if command is None:
        return
    keyword = _malformed(command)
    if keyword is None:
        return
    field = command.get_item(_COMMAND_FIELD)
    is_store = field is not None and _field_value(field) == _C_STORE_RQ
    calling_ae = str(event.assoc.requestor.ae_title).strip()
    name = "store-refused" if is_store else "request-refused"
    logger.warning("%s calling_ae=%r state=aborted reason='malformed %s in the command'",
                   name, calling_ae, keyword)
    record_quietly(app, name, calling_ae, "failure", detail=(
        f"status=A-ABORT reason=malformed {keyword} in the command "
        f"address={event.assoc.requestor.address}"))


def _field_value(element: Any) -> int:
    value = element.value
    if isinstance(value, bytes):
        return int.from_bytes(value[:2], "little")  # US, implicit VR little endian (PS3.7 6.3.1)
    return int(value)
