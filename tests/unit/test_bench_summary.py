"""scripts/bench's summary: every ratio line a benchmark prints lands in one table."""

from __future__ import annotations

import io

from scripts.benchmarks.summary import Recorder, parse, table


def test_ratio_lines_are_read_with_their_target_and_others_are_not() -> None:
    met = parse("forward", "forward ours/DCMTK-storescu = 0.83x (target >= 0.80x)")
    assert met is not None and met.met
    assert (met.comparison, met.value, met.unit, met.op, met.target) == (
        "forward ours/DCMTK-storescu", 0.83, "x", ">=", 0.80)
    missed = parse("ingest", "C-ECHO round trip ours/Orthanc = 1.62x (target <= 1.50x)")
    assert missed is not None and not missed.met
    memory = parse("memory", "RSS growth = 40 MB (target < 150 MB)")
    assert memory is not None and memory.met and memory.unit == "MB"
    trailing = parse("ingest", "acknowledged ours/bare-pynetdicom (1 sender) = 0.71x "
                               "(target >= 0.90x); Orthanc/bare-pynetdicom = 1.52x")
    assert trailing is not None and trailing.value == 0.71 and not trailing.met
    for other in ("| ours | 1 | 88 | 40 | 0.71x | 0.32x |", "ours/dicognito = 1.20x",
                  "C-ECHO ours=3.1 ms Orthanc=2.2 ms, association included"):
        assert parse("x", other) is None, other


def test_the_recorder_passes_output_through_and_tables_what_it_read() -> None:
    out = io.StringIO()
    recorder = Recorder(out)
    recorder.benchmark = "query"
    recorder.write("universal results/s ours/Orthanc (SQLite) = 1.3")
    recorder.write("0x (target >= 1.00x)\nnoise\n")  # a line written in two parts
    recorder.benchmark = "forward"
    recorder.write("forward ours/DCMTK-storescu = 0.64x (target >= 0.80x)\n")
    assert out.getvalue().startswith("universal results/s ours/Orthanc (SQLite) = 1.30x")
    assert table(recorder.results).splitlines()[2:] == [
        "| query | universal results/s ours/Orthanc (SQLite) | 1.30x | >= 1.00x | yes |",
        "| forward | forward ours/DCMTK-storescu | 0.64x | >= 0.80x | no |",
    ]
