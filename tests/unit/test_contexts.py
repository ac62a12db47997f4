"""The shared presentation contexts (gateway.contexts) and the pynetdicom they were read for."""

from __future__ import annotations

import copy

import pynetdicom
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless
from pynetdicom import AE, AllStoragePresentationContexts, build_context
from pynetdicom.presentation import negotiate_as_acceptor
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from gateway.contexts import CHECKED_PYNETDICOM, SharedContexts
from gateway.scp import TRANSFER_SYNTAXES


def _supported() -> SharedContexts:
    ae = AE()
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
    return SharedContexts(ae.supported_contexts)


def test_written_for_this_pynetdicom() -> None:
    assert pynetdicom.__version__.startswith(CHECKED_PYNETDICOM + "."), (
        f"gateway/contexts.py was checked against pynetdicom {CHECKED_PYNETDICOM}, this is "
        f"{pynetdicom.__version__}: re-read RequestHandler._create_association and "
        "negotiate_as_acceptor, then update CHECKED_PYNETDICOM")


def test_a_deep_copy_shares_the_contexts() -> None:
    supported = _supported()
    copied = copy.deepcopy(supported)
    assert copied == list(supported) and copied is not supported
    assert all(a is b for a, b in zip(copied, supported))


def test_negotiation_as_acceptor_leaves_the_shared_contexts_unchanged() -> None:
    supported = _supported()
    before = [(cx.abstract_syntax, list(cx.transfer_syntax), cx.scu_role, cx.scp_role)
              for cx in supported]
    requested = [build_context(CTImageStorage, [JPEG2000Lossless, ExplicitVRLittleEndian]),
                 build_context(Verification), build_context("1.2.3.4.5.6")]
    for index, context in enumerate(requested):
        context.context_id = 2 * index + 1
    roles = {CTImageStorage: (True, True)}  # the requestor proposes both roles
    accepted, _ = negotiate_as_acceptor(requested, copy.deepcopy(supported), roles)
    results = {cx.abstract_syntax: cx for cx in accepted}
    assert results[CTImageStorage].result == 0x00
    # both proposed syntaxes are supported: the acceptor's order decides
    assert results[CTImageStorage].transfer_syntax[0] == ExplicitVRLittleEndian
    assert results["1.2.3.4.5.6"].result == 0x03  # abstract syntax not supported
    assert all(cx not in supported for cx in accepted), "negotiation returned a shared object"
    after = [(cx.abstract_syntax, list(cx.transfer_syntax), cx.scu_role, cx.scp_role)
             for cx in supported]
    assert after == before
