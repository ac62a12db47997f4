"""The table of every ratio a run of ``scripts/bench`` printed, against its target.

Each benchmark prints its comparisons as lines of the form
``<comparison> = <value>x (target >= <target>x)`` (or ``<=``, or a value in
MB or ms), measured against a reference in the same run. :class:`Recorder`
copies what the benchmarks print to the terminal and keeps those lines;
:func:`table` turns them into one Markdown table, which ``scripts/bench``
prints at the end and writes to ``bench-results/summary.md``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import TextIO

__all__ = ["Recorder", "Result", "parse", "table"]

_LINE = re.compile(
    r"^(?P<comparison>[^=|]+?) = (?P<value>\d+(?:\.\d+)?)(?P<unit>x| MB| ms)?\s*"
    r"\(target (?P<op>>=|<=|<|>) (?P<target>\d+(?:\.\d+)?)(?:x| MB| ms)?\)")


@dataclass(frozen=True)
class Result:
    """One comparison: its value and target, and whether the target was met."""

    benchmark: str
    comparison: str
    value: float
    unit: str
    op: str
    target: float

    @property
    def met(self) -> bool:
        return {">=": self.value >= self.target, "<=": self.value <= self.target,
                ">": self.value > self.target, "<": self.value < self.target}[self.op]


def parse(benchmark: str, line: str) -> Result | None:
    """The result a printed line states, or None for any other line."""
    match = _LINE.match(line.strip())
    if match is None:
        return None
    return Result(benchmark, match["comparison"].strip(), float(match["value"]),
                  (match["unit"] or "").strip(), match["op"], float(match["target"]))


class Recorder:
    """Standard output that is also read line by line for results (see the module docstring)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._partial = ""
        self.benchmark = ""
        self.results: list[Result] = []

    def write(self, text: str) -> int:
        self._out.write(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            result = parse(self.benchmark, line)
            if result is not None:
                self.results.append(result)
        return len(text)

    def flush(self) -> None:
        self._out.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self._out, name)


def table(results: list[Result]) -> str:
    """The results as a Markdown table, in the order they were printed."""
    lines = ["| benchmark | comparison | measured | target | met |",
             "| --- | --- | ---: | ---: | :---: |"]
    for result in results:
        unit = result.unit if result.unit == "x" else f" {result.unit}" if result.unit else ""
        lines.append(f"| {result.benchmark} | {result.comparison} | {result.value:.2f}{unit} "
                     f"| {result.op} {result.target:.2f}{unit} | "
                     f"{'yes' if result.met else 'no'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - a manual check
    recorder = Recorder(sys.stdout)
    recorder.benchmark = "demo"
    print("ours/reference = 0.91x (target >= 0.80x)", file=recorder)
    print(table(recorder.results))
