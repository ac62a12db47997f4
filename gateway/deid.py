"""The de-identification profile and pseudonym space, built from the settings.

The anonymizer takes no configuration; this is where the node turns
``[anonymizer]`` settings and the secret into a
:class:`~anonymizer.Profile` and a :class:`~anonymizer.KeyedPseudonyms`.
"""

from __future__ import annotations

from collections.abc import Mapping

from anonymizer import KeyedPseudonyms, Profile
from config import AnonymizerSettings

from .secrets import load_key

__all__ = ["build_profile", "build_lookup", "load_secret"]


def build_profile(settings: AnonymizerSettings) -> Profile:
    """The PS3.15 profile with the configured options (validated by the config)."""
    return Profile.build(
        settings.options,
        safe_private_creators=settings.safe_private_creators,
        risky_sop_classes=settings.risky_sop_classes,
        max_sequence_depth=settings.max_sequence_depth,
        residual_phi_gate=settings.residual_phi_gate,
    )


def load_secret(settings: AnonymizerSettings, environ: Mapping[str, str]) -> bytes:
    """The de-identification secret (see :mod:`gateway.secrets`)."""
    return load_key(settings.key_env, settings.key_file, environ)


def build_lookup(settings: AnonymizerSettings, key: bytes) -> KeyedPseudonyms:
    """The node's own pseudonym space, keyed by its secret."""
    return KeyedPseudonyms(key, prefix=settings.pseudonym_prefix)
