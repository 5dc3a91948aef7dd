"""The errors of registry access: unreachable, refused credentials, unknown names, protocol trouble."""
from __future__ import annotations

from lamina.errors import LaminaError


class RegistryError(LaminaError):
    """A registry answered something lamina cannot use (an unexpected status or a malformed body)."""


class RegistryUnreachable(RegistryError):
    """The registry could not be reached (connection refused or reset, timeouts, TLS failure)."""


class AuthError(RegistryError):
    """The registry refused the credentials, or asked for some and none are configured."""


class NotFound(RegistryError):
    """The registry does not know the repository, tag, manifest or blob asked for."""


class BadReference(LaminaError):
    """A malformed registry reference such as `host/repo:tag`."""


class UnpinnedReference(BadReference):
    """A tag reference where a digest is required (--require-pinned)."""
