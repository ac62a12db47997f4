"""PS3.15 Table E.1-1, loaded once from the package's own copy.

The table lists the attributes that the Basic Application Level
Confidentiality Profile acts on, with the action of the Basic Profile and of
each of its ten options (PS3.15 E.1.1 and E.3). The copy and its provenance
live in ``anonymizer/_standard/``.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

__all__ = ["OPTION_COLUMNS", "Table", "TableRow", "load_table"]

#: The option columns of the table, in the order of PS3.15 Table E.1-1.
OPTION_COLUMNS: tuple[str, ...] = (
    "retain_safe_private",
    "retain_uids",
    "retain_device_identity",
    "retain_institution_identity",
    "retain_patient_characteristics",
    "retain_long_full_dates",
    "retain_long_modified_dates",
    "clean_descriptors",
    "clean_structured_content",
    "clean_graphics",
)

_TAG = re.compile(r"^\(([0-9A-FX]{4}),([0-9A-FX]{4})\)$")


@dataclass(frozen=True, slots=True)
class TableRow:
    """One attribute of Table E.1-1.

    ``tag`` is the tag as an int with every ``x`` digit set to zero, and
    ``mask`` has ones where the tag's digits are fixed: a repeating group
    such as (60xx,3000) matches any tag ``t`` with ``t & mask == tag``.
    """

    tag: int
    mask: int
    keyword: str
    name: str
    basic: str
    options: tuple[tuple[str, str], ...]

    @property
    def repeating(self) -> bool:
        return self.mask != 0xFFFFFFFF

    def option_action(self, option: str) -> str | None:
        for name, code in self.options:
            if name == option:
                return code
        return None


@dataclass(frozen=True, slots=True)
class Table:
    """The rows of Table E.1-1, indexed by exact tag and by repeating group."""

    rows: tuple[TableRow, ...]
    by_tag: dict[int, TableRow]
    repeating: tuple[TableRow, ...]
    #: the action the table gives private attributes ((gggg,eeee), gggg odd)
    private: TableRow

    def find(self, tag: int) -> TableRow | None:
        row = self.by_tag.get(tag)
        if row is not None:
            return row
        for rep in self.repeating:
            if tag & rep.mask == rep.tag:
                return rep
        return None


def _parse_tag(text: str) -> tuple[int, int]:
    match = _TAG.match(text.upper())
    if match is None:
        raise ValueError(f"unexpected tag {text!r} in Table E.1-1")
    digits = match.group(1) + match.group(2)
    tag = int(digits.replace("X", "0"), 16)
    mask = int("".join("0" if d == "X" else "F" for d in digits), 16)
    return tag, mask


@lru_cache(maxsize=1)
def load_table() -> Table:
    """Return Table E.1-1 parsed from ``_standard/ps315_e1_1.csv``.

    Returns
    -------
    Table
        621 rows; exact tags in ``by_tag``, the 50xx/60xx groups in
        ``repeating`` and the private-attribute row in ``private``.
    """
    text = resources.files("anonymizer._standard").joinpath("ps315_e1_1.csv").read_text(
        encoding="utf-8"
    )
    rows: list[TableRow] = []
    private: TableRow | None = None
    for record in csv.DictReader(io.StringIO(text)):
        options = tuple(
            (column, record[column]) for column in OPTION_COLUMNS if record[column]
        )
        if record["tag"].upper().startswith("(GGGG,EEEE)"):
            private = TableRow(0, 0, "", record["name"], record["basic_profile"], options)
            rows.append(private)
            continue
        tag, mask = _parse_tag(record["tag"])
        rows.append(
            TableRow(tag, mask, record["keyword"], record["name"], record["basic_profile"], options)
        )
    if private is None:
        raise ValueError("Table E.1-1 copy has no private-attribute row")
    by_tag = {row.tag: row for row in rows if row.mask == 0xFFFFFFFF and row is not private}
    repeating = tuple(row for row in rows if row.mask not in (0xFFFFFFFF, 0))
    return Table(tuple(rows), by_tag, repeating, private)
