"""A consulting institute for confirmation tests: a pynetdicom Storage SCP with options.

:class:`Institute` listens on a free loopback port and records every
C-STORE. As configured it is also a Storage Commitment Push Model SCP
(PS3.4 J.3) that answers each N-ACTION and then reports by N-EVENT-REPORT
on the same association (``"same"``, a moment after the N-ACTION response,
as an SCP that assesses the request first does), on an association it
opens to the node proposing the SCP role (``"new"``), never (``"never"``),
or aborts the association instead of answering (``"abort"``); and a Study
Root FIND SCP at the IMAGE level (``find``). It can report the first
``fail_first`` referenced instances of its first transaction as failed,
and "lose" its first ``lose`` instances (answer Success, keep nothing, so
a C-FIND does not find them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
)

PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"
_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


@dataclass
class Institute:
    """A destination peer that confirms as configured (see the module notes)."""

    commitment: str = "none"  # none | same | new | never | abort
    find: bool = False
    fail_first: int = 0
    lose: int = 0
    #: seconds between the N-ACTION and the result on a new association
    delay: float = 0.0
    node_port: int = 0
    ae_title: str = "INSTITUTE"
    arrived: list[str] = field(default_factory=list)
    kept: dict[str, Dataset] = field(default_factory=dict)
    #: (Transaction UID, [(SOP class, SOP instance)]) of each N-ACTION
    actions: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    #: (how it was sent, the node's N-EVENT-REPORT status) of each report
    reports: list[tuple[str, int | None]] = field(default_factory=list)
    reported: threading.Event = field(default_factory=threading.Event)
    server: Any = None

    def start(self) -> Institute:
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(CTImageStorage, _SYNTAXES)
        if self.commitment != "none":
            ae.add_supported_context(StorageCommitmentPushModel, _SYNTAXES)
        if self.find:
            ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind, _SYNTAXES)
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[
            (evt.EVT_C_STORE, self._on_store), (evt.EVT_N_ACTION, self._on_action),
            (evt.EVT_C_FIND, self._on_find)])
        return self

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def _on_store(self, event: Any) -> int:
        ds = event.dataset
        uid = str(ds.SOPInstanceUID)
        self.arrived.append(uid)
        if self.lose > 0:
            self.lose -= 1
        else:
            self.kept[uid] = ds
        return 0x0000

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        query = event.identifier
        for ds in list(self.kept.values()):
            if (ds.StudyInstanceUID == query.StudyInstanceUID
                    and ds.SeriesInstanceUID == query.SeriesInstanceUID):
                match = Dataset()
                match.QueryRetrieveLevel = "IMAGE"
                match.StudyInstanceUID = ds.StudyInstanceUID
                match.SeriesInstanceUID = ds.SeriesInstanceUID
                match.SOPInstanceUID = ds.SOPInstanceUID
                yield 0xFF00, match
        yield 0x0000, None

    def _on_action(self, event: Any) -> tuple[int, Dataset | None]:
        info = event.action_information
        references = [(str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID))
                      for item in info.ReferencedSOPSequence]
        transaction_uid = str(info.TransactionUID)
        self.actions.append((transaction_uid, references))
        failing = references[:self.fail_first] if len(self.actions) == 1 else []
        if self.commitment == "abort":  # no response at all
            event.assoc.abort()
            return 0x0110, None
        if self.commitment in ("same", "new"):
            threading.Thread(target=self._report, daemon=True,
                             args=(event.assoc, transaction_uid, references, failing)).start()
        return 0x0000, None

    def result(self, transaction_uid: str, references: list[tuple[str, str]],
               failing: list[tuple[str, str]]) -> tuple[int, Dataset]:
        """Event Type ID and Event Information of a result (PS3.4 J.3.3)."""
        info = Dataset()
        info.TransactionUID = transaction_uid
        info.ReferencedSOPSequence = [_item(*ref) for ref in references if ref not in failing]
        if failing:
            info.FailedSOPSequence = [_item(*ref, reason=0x0110) for ref in failing]
        return (2 if failing else 1), info

    def _report(self, assoc: Any, transaction_uid: str, references: list[tuple[str, str]],
                failing: list[tuple[str, str]]) -> None:
        event_type, info = self.result(transaction_uid, references, failing)
        if self.commitment == "same":
            time.sleep(0.3)  # after the N-ACTION response has gone out
            status, _ = assoc.send_n_event_report(info, event_type, StorageCommitmentPushModel,
                                                  PUSH_MODEL_INSTANCE)
            self.reports.append(("same", int(status.Status) if "Status" in status else None))
        else:
            time.sleep(self.delay)  # an SCP that takes its time to assess the request
            self.reports.append(("new", self.report_on_new_association(event_type, info)))
        self.reported.set()

    def report_on_new_association(self, event_type: int, info: Dataset,
                                  ae_title: str | None = None, scu_role: bool = False,
                                  scp_role: bool = True) -> int | None:
        """Open an association to the node as the SCP (role selection) and report there."""
        ae = AE(ae_title=ae_title or self.ae_title)
        ae.add_requested_context(StorageCommitmentPushModel, _SYNTAXES)
        assoc = ae.associate("127.0.0.1", self.node_port, ae_title="GATEWAY",
                             ext_neg=[build_role(StorageCommitmentPushModel, scu_role=scu_role,
                                                 scp_role=scp_role)])
        if not assoc.is_established:
            return None
        try:
            if not assoc.accepted_contexts:
                return None
            status, _ = assoc.send_n_event_report(info, event_type, StorageCommitmentPushModel,
                                                  PUSH_MODEL_INSTANCE)
            return int(status.Status) if "Status" in status else None
        finally:
            assoc.release()


def _item(sop_class: str, sop_instance: str, reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    if reason is not None:
        item.FailureReason = reason
    return item
