"""``ConfigError``: every problem found while loading the configuration."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ConfigError"]


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every reason at once.

    Each problem is one line naming the key, the value as given, what was
    expected and where the value came from, for example::

        listener.port: expected an integer 1-65535, got "11112a" (from DICOM_GATEWAY_LISTENER__PORT)

    ``str(error)`` is the lines joined by newlines.

    Parameters
    ----------
    problems : Iterable[str]
        One line per problem; at least one.
    """

    problems: tuple[str, ...]

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        if not self.problems:
            raise ValueError("ConfigError needs at least one problem")
        super().__init__("\n".join(self.problems))

    def __reduce__(self) -> tuple[type[ConfigError], tuple[tuple[str, ...]]]:
        return type(self), (self.problems,)
