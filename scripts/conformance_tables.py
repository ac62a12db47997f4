#!/usr/bin/env python3
"""Write the node's presentation-context tables into docs/conformance-statement.md.

Usage::

    .venv/bin/python scripts/conformance_tables.py [--check]

The tables between the document's markers are rendered from the contexts the
node's AE supports (gateway.conformance); the rest of the document is left
as it is. ``--check`` changes nothing and exits 1 when the document is out of
date. Run it after changing the SOP classes or transfer syntaxes the node
accepts (gateway/scp.py); tests/integration/test_conformance_statement.py
fails until the document matches.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from config import load_config  # noqa: E402
from gateway.conformance import BEGIN, END, tables  # noqa: E402
from gateway.scp import build_ae  # noqa: E402

DOCUMENT = REPO_ROOT / "docs" / "conformance-statement.md"


def render(text: str) -> str:
    """``text`` with its generated block replaced by the node's current tables."""
    # the AE's contexts depend on no setting a deployment can change; build_ae reads only
    # app.settings, so the embedded defaults stand in for a whole node here
    node: Any = SimpleNamespace(settings=load_config(None, {}))
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    return f"{head}{BEGIN}\n{tables(build_ae(node).supported_contexts)}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with --check, compare) the document; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether it is current")
    args = parser.parse_args(argv)
    text = DOCUMENT.read_text(encoding="utf-8")
    current = render(text)
    if args.check:
        if current != text:
            print(f"{DOCUMENT.relative_to(REPO_ROOT)} is out of date: run {sys.argv[0]}",
                  file=sys.stderr)
            return 1
        return 0
    DOCUMENT.write_text(current, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
