"""A Storage SCP for forwarding tests: it records what it was offered and answers a status.

``StoreSink()`` listens on a free loopback port (pynetdicom, CT Image Storage
in the uncompressed transfer syntaxes unless told otherwise) and answers each
C-STORE with its ``status`` (PS3.4 Table B.2-1), which a test may change
between forwarding passes to play a destination that recovers.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

from pynetdicom import AE, evt
from sqlalchemy.engine import Engine
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

__all__ = ["StoreSink", "route_all_ct"]


class StoreSink:
    """A destination on loopback: ``port``, the SOP Instance UIDs ``offered`` in order."""

    def __init__(self, status: int = 0x0000, ae_title: str = "SINK", delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay  # seconds each C-STORE takes
        self.offered: list[str] = []
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        ae.add_supported_context(CTImageStorage)
        server = ae.start_server(("127.0.0.1", 0), block=False,
                                 evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        assert server is not None
        self._server = server
        self.port = int(server.server_address[1])

    def _on_store(self, event: Any) -> int:
        time.sleep(self.delay)
        with self._lock:
            self.offered.append(str(event.request.AffectedSOPInstanceUID))
        return self.status

    def close(self) -> None:
        self._server.shutdown()

    def __enter__(self) -> StoreSink:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def route_all_ct(engine: Engine, port: int, ae_title: str = "SINK") -> None:
    """Register the destination ``institute`` on loopback ``port`` and a route of every CT
    study to it."""
    import storage.routes as routes
    from storage import peers
    from storage.db import session_scope
    from storage.records import PeerRecord

    with session_scope(engine) as session:
        peers.add(session, PeerRecord(slug="institute", ae_title=ae_title, host="127.0.0.1",
                                      port=port, roles=("destination",)))
        routes.add(session, routes.RouteSpec(name="all-ct", destinations=("institute",),
                                             conditions=("ModalitiesInStudy=CT",)))
