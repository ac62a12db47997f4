"""docs/conformance-statement.md tells the truth about what the node negotiates (PS3.2).

Its generated block must equal what :mod:`gateway.conformance` renders from
the node's AE, and a running node must accept every (SOP class, transfer
syntax) pair it lists and reject every other pair of every SOP class
pynetdicom knows and every listed syntax (plus a few syntaxes and a private
SOP class the node does not take).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydicom.uid import DeflatedExplicitVRLittleEndian, HTJ2KLossless, JPEGLSLossless
import pynetdicom.presentation
from pynetdicom import AE, build_context

from gateway.conformance import pairs, tables
from gateway.node import Node
from gateway.scp import build_ae
from scripts.conformance_tables import render

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "conformance-statement.md"
#: at most this many contexts per association (odd context IDs 1-255)
_PER_ASSOCIATION = 120
_ANCHOR = ("1.2.840.10008.1.1", "1.2.840.10008.1.2")


def _known_sop_classes() -> set[str]:
    """Every SOP class pynetdicom has a presentation context list for (some 260)."""
    return {str(cx.abstract_syntax) for name in dir(pynetdicom.presentation)
            if name.endswith("PresentationContexts")
            for cx in getattr(pynetdicom.presentation, name)}


def _negotiate(port: int, proposed: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Propose each pair as a context of its own; return the pairs the node accepted."""
    accepted: set[tuple[str, str]] = set()
    for start in range(0, len(proposed), _PER_ASSOCIATION):
        # each association also proposes Verification, so that one whose other contexts are
        # all refused is still established (pynetdicom aborts one with none accepted)
        chunk = [_ANCHOR, *proposed[start:start + _PER_ASSOCIATION]]
        ae = AE(ae_title="CLINIC")
        ae.requested_contexts = [build_context(sop, [ts]) for sop, ts in chunk]
        assoc = ae.associate("127.0.0.1", port, ae_title="GATEWAY")
        assert assoc.is_established
        accepted |= {(str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                     for cx in assoc.accepted_contexts}
        assoc.release()
    return accepted


def test_the_document_is_generated_from_the_node(make_node: Callable[..., Node]) -> None:
    text = DOCUMENT.read_text(encoding="utf-8")
    assert render(text) == text, "run scripts/conformance_tables.py"
    node = make_node()
    rendered = tables(build_ae(node.app).supported_contexts)
    assert rendered in text
    listed = pairs(text)
    assert len({sop for sop, _ in listed}) == len(build_ae(node.app).supported_contexts)


def test_the_node_negotiates_exactly_what_the_document_lists(
    make_node: Callable[..., Node],
) -> None:
    listed = pairs(DOCUMENT.read_text(encoding="utf-8"))
    sop_classes = sorted({sop for sop, _ in listed} | _known_sop_classes())
    syntaxes = sorted({ts for _, ts in listed} | {
        str(DeflatedExplicitVRLittleEndian), str(HTJ2KLossless), str(JPEGLSLossless)})
    unknown_sop = "1.2.826.0.1.3680043.10.1077.1"  # a private SOP class nobody registered
    proposed = [(sop, ts) for sop in [*sop_classes, unknown_sop] for ts in syntaxes]
    node = make_node()
    accepted = _negotiate(node.port, proposed)
    assert listed - accepted == set(), "listed but refused by the node"
    assert accepted - listed == set(), "accepted by the node but not listed"
    assert ("1.2.840.10008.5.1.4.1.1.2", str(DeflatedExplicitVRLittleEndian)) not in accepted
    assert not any(sop == unknown_sop for sop, _ in accepted)
