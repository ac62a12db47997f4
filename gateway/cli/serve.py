"""``dicom-gateway serve``: the listener, the ingest workers, in the foreground.

Flags override the configuration so that one command line can start a
second node: ``--port``, ``--ae-title``, ``--bind``, ``--data-dir``,
``--database-url``. The effective configuration is logged once at start,
redacted. SIGINT or SIGTERM stops the node: the listener first, then the
workers finish the instance they hold; whatever is left waits in the spool.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from config import Override
from gateway.app import build_app
from gateway.cli._context import AppContext, pass_app
from gateway.cli._exit import translate_errors
from gateway.logs import configure_logging
from gateway.node import Node

__all__ = ["serve"]

logger = logging.getLogger("gateway.serve")


@click.command("serve")
@click.option("--port", type=int, help="TCP port of the DICOM listener (listener.port).")
@click.option("--ae-title", help="Our AE title (node.ae_title).")
@click.option("--bind", help="Address to listen on (listener.bind).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Data folder: spool, store, SQLite, secrets (storage.data_dir).")
@click.option("--database-url", help="SQLAlchemy URL of the index (database.url).")
@pass_app
@translate_errors
def serve(app: AppContext, port: int | None, ae_title: str | None, bind: str | None,
          data_dir: Path | None, database_url: str | None) -> None:
    """Run the node: DICOM listener, ingest workers, until interrupted."""
    for key, flag, value in (
        ("listener.port", "--port", port),
        ("node.ae_title", "--ae-title", ae_title),
        ("listener.bind", "--bind", bind),
        ("storage.data_dir", "--data-dir", str(data_dir) if data_dir else None),
        ("database.url", "--database-url", database_url),
    ):
        if value is not None:
            app.overrides[key] = Override(value, flag)
    settings = app.settings
    configure_logging(app.verbosity, base_level=settings.logging.level)
    logger.info("config %s", json.dumps(settings.to_dict(redact=True), sort_keys=True))
    node = Node(build_app(settings, os.environ), worker_processes=True, receiver_processes=True)
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    node.start(own_tempdir=True)
    # What start-up built (modules, dictionaries, contexts) lives as long as the process:
    # keep it out of the collector's full passes, which otherwise pause receiving and
    # make the interpreter's exit take seconds.
    gc.freeze()
    bind = settings.listener.bind
    where = ([f"{bind}:{node.port}"] if node.server is not None else []) + (
        [f"{bind}:{node.tls_port} (TLS)"] if node.tls_server is not None else [])
    click.echo(f"dicom-gateway listening as {settings.node.ae_title} on {', '.join(where)}",
               err=True)
    try:
        stopping.wait()
    finally:
        node.stop()
        node.app.close()
        logger.info("stopped")
