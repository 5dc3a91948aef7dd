"""Registry image references (`[docker://]HOST[:PORT]/REPO[:TAG][@sha256:...]`): parsing and naming."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Optional

from lamina.registry.errors import BadReference

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
SCHEME = "docker://"

_HOST = re.compile(
    r"^(?:\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*)"
    r"(?::[0-9]{1,5})?$"
)
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Reference:
    """An image in a registry: by tag, by digest, or both (the digest wins when fetching)."""

    registry: str  # as written, e.g. "127.0.0.1:5000", "ghcr.io"; "docker.io" for Docker Hub
    repository: str  # e.g. "library/busybox", "team/app"
    tag: Optional[str] = None
    digest: Optional[str] = None

    @property
    def api_host(self) -> str:
        """HOST[:PORT] the registry API answers on."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def hostname(self) -> str:
        """The host without port or brackets, lower case."""
        return split_host(self.api_host)[0]

    @property
    def pinned(self) -> bool:
        return self.digest is not None

    @property
    def name(self) -> str:
        """REGISTRY/REPO, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def target(self) -> str:
        """What goes after /manifests/ in a URL: the digest if known, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> "Reference":
        """The pinned form `REGISTRY/REPO@DIGEST`."""
        return replace(self, tag=None, digest=digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        return text

    @property
    def url(self) -> str:
        """The reference as a lamina source: `docker://...`."""
        return SCHEME + str(self)


def split_host(host: str) -> tuple[str, Optional[int]]:
    """('127.0.0.1', 5000) from '127.0.0.1:5000'; ('::1', None) from '[::1]'."""
    if host.startswith("["):
        end = host.find("]")
        name, rest = host[1:end], host[end + 1:]
        return name.lower(), int(rest[1:]) if rest.startswith(":") else None
    name, sep, port = host.rpartition(":")
    if not sep or not port.isdigit() or ":" in name:  # no port, or a bare IPv6 address
        return host.lower(), None
    return name.lower(), int(port)


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (with or without a port)."""
    name = split_host(host)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_registry_ref(text: str) -> bool:
    return text.startswith(SCHEME)


def parse_reference(text: str, require_tag: bool = False) -> Reference:
    """A Reference from `[docker://]HOST[:PORT]/REPO[:TAG][@DIGEST]`; BadReference explaining the form otherwise.

    A first component without '.' or ':' (and not 'localhost') is a Docker Hub repository, as in `docker pull`.
    """
    form = "write [docker://]HOST[:PORT]/REPO[:TAG][@sha256:<64 hex>], e.g. docker://127.0.0.1:5000/team/app:1"
    raw = text[len(SCHEME):] if text.startswith(SCHEME) else text
    if not raw or raw != raw.strip():
        raise BadReference(f"{text!r} is not an image reference; {form}")
    rest, at, digest = raw.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise BadReference(f"{text!r}: digest {digest!r} is not sha256:<64 lowercase hex digits>")
    tag: Optional[str] = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise BadReference(f"{text!r}: tag {tag!r} is not valid (letters, digits, '_', '.', '-'; at most 128)")
    first, sep, path = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry = first
        if not _HOST.fullmatch(registry):
            raise BadReference(f"{text!r}: {registry!r} is not a registry host[:port]; {form}")
    else:
        registry, path = DOCKER_HUB, rest
    if registry == DOCKER_HUB and path and "/" not in path:
        path = "library/" + path  # as `docker pull busybox` means docker.io/library/busybox
    components = path.split("/")
    if not path or not all(_COMPONENT.fullmatch(c) for c in components):
        raise BadReference(
            f"{text!r}: repository {path!r} is not valid (lowercase letters, digits and separators . _ __ -); {form}"
        )
    if require_tag and not tag:
        raise BadReference(f"{text!r}: name the tag to push, e.g. {registry}/{path}:latest")
    return Reference(registry, path, tag, digest or None)
