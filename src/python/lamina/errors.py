"""The error types of the lamina core: one base class, one subclass per kind of problem."""
from __future__ import annotations


def shown(name: str) -> str:
    """A name read from an archive, for a one-line message: as it is when printable, else its repr."""
    return name if name.isprintable() else repr(name)


class LaminaError(Exception):
    """Base of every error the core raises for bad input; its message is one line for the user."""


class InvalidSource(LaminaError):
    """A source reference or archive that cannot be read as an image."""


class UnsafeArchive(LaminaError):
    """An archive that tries to escape its root or otherwise cannot be trusted."""


class DigestMismatch(LaminaError):
    """A blob whose bytes do not match the digest or size that names it."""


class SelectorError(LaminaError):
    """A layer selector that is malformed, or matches nothing or more than one layer."""


class PlatformMismatch(LaminaError):
    """Layers from images built for different platforms."""


class SpecError(LaminaError):
    """A compose spec that is malformed."""


class InvalidIndex(LaminaError):
    """A layer index file (from `lamina scan`) that cannot be read."""


class CheckFailed(LaminaError):
    """A composition check whose findings the policy treats as errors."""
