"""``dicom-gateway anonymize IN OUT``: de-identify files, folders and DICOM media offline.

The same engine and profile as the node (PS3.15 Annex E with the configured
options, the same secret, so the same patient gets the same pseudonym here
and in the node). See :mod:`anonymizer.batch` for what is written where.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from anonymizer.batch import BatchReport, FileReport, Outcome, find_inputs, run
from gateway.cli._context import AppContext, pass_app
from gateway.cli._exit import FAILED, OK, translate_errors
from gateway.deid import build_lookup, build_profile, load_secret

__all__ = ["anonymize"]

logger = logging.getLogger(__name__)

_LABELS = (
    (Outcome.DEIDENTIFIED, "de-identified"),
    (Outcome.NEEDS_REVIEW, "needing review"),
    (Outcome.FAILED, "failed"),
    (Outcome.NOT_DICOM, "not DICOM (skipped)"),
    (Outcome.MEDIA_DIRECTORY, "DICOMDIR (not copied)"),
)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)


def _print_text(report: BatchReport, root: Path) -> None:
    width = max(len(label) for _, label in _LABELS)
    click.echo(f"{'files':<{width}}  {report.files}")
    for outcome, label in _LABELS:
        click.echo(f"{label:<{width}}  {report.counts[outcome]}")
    for item in report.attention:
        click.echo(f"{item.outcome.value}: {_relative(item.source, root)}: {item.reason}")


def _as_json(report: BatchReport, root: Path) -> str:
    return json.dumps(
        {
            "files": report.files,
            "counts": {outcome.value: report.counts[outcome] for outcome, _ in _LABELS},
            "attention": [
                {
                    "source": _relative(item.source, root),
                    "outcome": item.outcome.value,
                    "reason": item.reason,
                    "output": str(item.output) if item.output else None,
                }
                for item in report.attention
            ],
        },
        indent=2,
    )


@click.command("anonymize")
@click.argument("source", metavar="IN", type=click.Path(exists=True, path_type=Path))
@click.argument("target", metavar="OUT", type=click.Path(file_okay=False, path_type=Path))
@click.option("-r", "--recursive", is_flag=True, help="Descend into sub-folders of IN.")
@click.option(
    "--review-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write instances that need a person's review (burned-in text, documents) here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON document.")
@pass_app
@translate_errors
def anonymize(
    app: AppContext,
    source: Path,
    target: Path,
    recursive: bool,
    review_dir: Path | None,
    as_json: bool,
) -> None:
    """De-identify the DICOM files in IN (a file, a folder or a DICOMDIR tree) into OUT.

    Output files are named <study>/<series>/<instance>.dcm from the new UIDs.
    Files that are not DICOM are skipped and counted; the DICOMDIR is not
    copied. Exits 1 when a file failed or no DICOM instance was found.
    """
    source, target = source.resolve(), target.resolve()
    if source.is_dir() and target.is_relative_to(source):
        raise click.UsageError("OUT must not be inside IN.")
    settings = app.settings
    profile = build_profile(settings.anonymizer)
    lookup = build_lookup(settings.anonymizer, load_secret(settings.anonymizer, app.environ))
    errors: list[FileReport] = []
    root = source if source.is_dir() else source.parent
    sources = find_inputs(source, recursive, errors)
    with click.progressbar(
        length=len(sources), label="de-identifying", file=sys.stderr,
        show_pos=True,
    ) as bar:
        def progress(item: FileReport) -> None:
            bar.update(1)
            sop = item.output.stem if item.output else "-"
            logger.debug("anonymize outcome=%s sop=%s", item.outcome.value, sop)

        report = run(sources, target, profile, lookup, review_root=review_dir,
                     progress=progress)
    for item in errors:
        report.add(item)
    if as_json:
        click.echo(_as_json(report, root))
    else:
        _print_text(report, root)
    sys.exit(OK if report.ok else FAILED)
