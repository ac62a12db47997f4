"""``dicom-gateway import PATH``: records from a CD, DVD, USB stick or folder, as a C-STORE.

The files go through the same header check, spool and ingest as a C-STORE
(:mod:`gateway.importer`), recorded as sent by ``IMPORT`` or, with
``--as-peer``, by that peer's AE title. A progress bar runs on stderr; the
summary (imported, already present, quarantined, not DICOM, DICOMDIR
skipped, refused with the reason, queued) goes to stdout, or as one JSON
document with ``--json``. The run is audited with the OS user. Exit status 1
when a file was refused, an entry was left in the spool, or no DICOM instance
was found; 3 when the peer is unknown.
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path

import click

import storage.audit as audit
import storage.peers as peers
from gateway.cli._context import AppContext, pass_app
from gateway.cli._exit import translate_errors
from gateway.cli._node import node_app, storage_failure
from gateway.errors import GatewayError, NotFoundError
from gateway.importer import ImportReport, find_files, import_files, import_meta
from storage.db import session_scope
from storage.errors import StorageError

__all__ = ["import_"]


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or path.name
    except ValueError:
        return str(path)


def _counts(report: ImportReport) -> dict[str, int]:
    return {
        "files": report.files,
        "imported": report.imported,
        "already_present": report.already_present,
        "quarantined": report.quarantined,
        "not_dicom": report.not_dicom,
        "dicomdir_skipped": report.media_directory,
        "refused": len(report.refused),
        "queued": report.queued,
        "preamble_replaced": report.preamble_replaced,
    }


@click.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--as-peer", "peer_slug", metavar="SLUG",
              help="Record the instances as sent by this registered peer (default: IMPORT).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON document.")
@pass_app
@translate_errors
def import_(app: AppContext, path: Path, peer_slug: str | None, as_json: bool) -> None:
    """Import a DICOMDIR media tree or a folder of DICOM files (recursively) into the node."""
    node = node_app(app)
    calling_ae: str | None = None
    if peer_slug is not None:
        try:
            with session_scope(node.engine, readonly=True) as session:
                peer = peers.get(session, peer_slug)
        except StorageError as exc:
            raise storage_failure(exc) from exc
        if peer is None:
            raise NotFoundError(f"peer {peer_slug!r} not found; see: dicom-gateway peer list")
        calling_ae = peer.ae_title
    meta = import_meta(node, calling_ae, peer_slug)
    files = find_files(path)
    with click.progressbar(files, label="importing", file=sys.stderr,
                           show_pos=True) as progress:
        report = import_files(node, progress, meta)
    counts = _counts(report)
    actor = _actor()
    try:
        with session_scope(node.engine) as session:
            audit.record(session, "import", actor, "success" if report.ok else "failure",
                         detail=" ".join(f"{key}={value}" for key, value in counts.items()
                                         if key != "files" and value)
                         + f" as={meta.calling_ae_title}")
    except StorageError as exc:
        raise storage_failure(exc) from exc
    root = path if path.is_dir() else path.parent
    if as_json:
        click.echo(json.dumps({
            **counts,
            "calling_ae_title": meta.calling_ae_title,
            "refusals": [{"source": _relative(item.path, root), "reason": item.reason}
                         for item in report.refused],
        }, indent=2))
    else:
        width = max(len(key) for key in counts) + 1
        for key, value in counts.items():
            click.echo(f"{key + ':':<{width}} {value}")
        for item in report.refused:
            click.echo(f"refused: {_relative(item.path, root)}: {item.reason}")
    if report.refused:
        raise GatewayError(f"import: {len(report.refused)} file(s) refused; listed above")
    if report.queued:
        raise GatewayError(f"import: {report.queued} instance(s) left in the spool; "
                           "the node or: dicom-gateway ingest run --once finishes them")
    if not report.ok:
        raise GatewayError(f"import: no DICOM instance found under {path}")
