"""Which redirects a registry request follows, and where its credentials may go.

Registries redirect blob GETs to storage (S3, a CDN) with a signed URL. lamina follows http and https
redirects only, never from https to http, at most MAX_REDIRECTS in a row, and sends the registry's
Authorization only to the registry's own origin (scheme, host and port): a storage URL carries its own.
"""
from __future__ import annotations

import urllib.parse
from typing import NamedTuple

import urllib3.util

from lamina.errors import shown
from lamina.registry.errors import RegistryError
from lamina.registry.reference import split_host

MAX_REDIRECTS = 10  # as Go's net/http (and so Docker) allows
_PORTS = {"http": 80, "https": 443}


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int


def origin(url: str) -> Origin:
    """(scheme, host, port) of a URL, lower case and with the scheme's default port filled in."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    host, port = split_host(parts.netloc.rpartition("@")[2])
    return Origin(scheme, host, port or _PORTS.get(scheme, 0))


def shown_target(url: str) -> str:
    """scheme://host[:port] of a URL (no path or query: a signed storage URL's query is a credential), escaped
    unless printable: it comes from the registry."""
    parts = urllib.parse.urlsplit(url)
    return shown(f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"[:200])


def follow(current: str, location: str, registry: str, what: str, count: int) -> str:
    """The URL to request next when `current` answered a redirect to `location` (the `count`th in a row);
    a one-line RegistryError when lamina refuses to follow it."""
    if count > MAX_REDIRECTS:
        raise RegistryError(f"{what}: {registry} redirected more than {MAX_REDIRECTS} times in a row "
                            f"(the last to {shown_target(location)}); lamina stops there")
    try:
        url = urllib.parse.urljoin(current, location.strip())
        urllib3.util.parse_url(url)  # what urllib3 would refuse later ("http://h:port-no-number/")
        target = origin(url)
        if not target.host.isprintable() or " " in target.host:
            raise ValueError(target.host)
    except ValueError:  # urllib3's LocationParseError is one too  # "http://[x": no URL
        # (its query left out: a signed storage URL's query is a credential)
        raise RegistryError(f"{what}: {registry} redirected to {location.split('?', 1)[0][:100]!r}, which is not a URL"
                            ) from None
    if target.scheme not in _PORTS:
        raise RegistryError(f"{what}: {registry} redirected to a {target.scheme or 'scheme-less'} URL "
                            f"({shown_target(url)}); lamina follows only http and https redirects")
    if not target.host:
        raise RegistryError(f"{what}: {registry} redirected to {shown_target(url)}, which names no host")
    if origin(current).scheme == "https" and target.scheme == "http":
        raise RegistryError(f"{what}: {registry} redirected from https to plain http ({shown_target(url)}); "
                            "lamina never downgrades a redirect")
    return url
