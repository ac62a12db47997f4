"""Errors of the anonymizer. Messages name attributes and rules, never values."""

from __future__ import annotations

__all__ = ["AnonymizationError", "ResidualPHIError"]


class AnonymizationError(Exception):
    """The instance cannot be de-identified; the message says why, without PHI."""


class ResidualPHIError(AnonymizationError):
    """An identifier of the instance survived de-identification (the residual-PHI gate)."""

