"""Proxies from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), matched as Docker (Go's net/http) does.

As in Go, a loopback host (`localhost`, 127.0.0.0/8, ::1) is never proxied: a corporate proxy would
otherwise receive the requests (and credentials) meant for a registry on this machine. Unlike Go, a
malformed proxy URL is an error naming the variable, not a silent direct connection.
"""
from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass
from typing import Mapping, Optional, Union

from lamina.registry.reference import is_loopback

from lamina.registry.errors import RegistryError
from lamina.registry.reference import split_host

DEFAULT_PORTS = {"http": 80, "https": 443}
_Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
_Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def _env(environ: Mapping[str, str], name: str) -> tuple[str, str]:
    """(variable, value) of NAME or name, the upper-case form first as Go reads them; ('', '') if neither is set."""
    for key in (name.upper(), name.lower()):
        value = environ.get(key, "").strip()
        if value:
            return key, value
    return "", ""


@dataclass(frozen=True)
class ProxyURL:
    """A parsed proxy: where to connect, and the Proxy-Authorization credentials if the URL had some."""

    url: str  # scheme://host:port, without credentials: safe to print
    basic_auth: Optional[str] = None  # "user:password", percent-decoded
    var: str = "HTTPS_PROXY"  # the variable it came from


@dataclass(frozen=True)
class ProxyConfig:
    """The proxy settings of the environment; empty means every connection is direct."""

    https_proxy: str = ""
    http_proxy: str = ""
    no_proxy: str = ""
    https_var: str = "HTTPS_PROXY"  # which variable each came from, for error messages
    http_var: str = "HTTP_PROXY"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "ProxyConfig":
        https_var, https = _env(environ, "https_proxy")
        http_var, http = _env(environ, "http_proxy")
        return cls(https, http, _env(environ, "no_proxy")[1], https_var or "HTTPS_PROXY", http_var or "HTTP_PROXY")

    def proxy_for(self, url: str) -> Optional[ProxyURL]:
        """The proxy a request to `url` goes through, None for a direct connection."""
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        raw, var = (self.https_proxy, self.https_var) if scheme == "https" else (self.http_proxy, self.http_var)
        if not raw or scheme not in DEFAULT_PORTS:
            return None
        host, port = split_host(parts.netloc.rpartition("@")[2])
        if is_loopback(host) or bypassed(self.no_proxy, host, port or DEFAULT_PORTS[scheme]):
            return None
        return parse_proxy_url(raw, var)


def parse_proxy_url(raw: str, var: str) -> ProxyURL:
    """`http://user:pass@proxy:3128` (or `proxy:3128`, taken as http) as a ProxyURL; RegistryError if unusable."""
    text = raw if "://" in raw else "http://" + raw
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError:
        raise RegistryError(f"{var} is not a proxy URL: {_redacted(raw)!r}; "
                            "write it as http://[USER:PASSWORD@]HOST:PORT") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise RegistryError(f"{var} names a {scheme}: proxy ({_redacted(raw)}); lamina speaks to http and https "
                            "proxies only")
    if not parts.hostname:
        raise RegistryError(f"{var} has no proxy host: {_redacted(raw)!r}; write it as http://HOST:PORT")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    auth = None
    if parts.username is not None:
        auth = urllib.parse.unquote(parts.username) + ":" + urllib.parse.unquote(parts.password or "")
    return ProxyURL(f"{scheme}://{host}:{port or DEFAULT_PORTS[scheme]}", auth, var)


def _redacted(raw: str) -> str:
    """The proxy URL without its password, for messages."""
    head, sep, rest = raw.rpartition("@")
    if not sep:
        return raw
    scheme, colon, userinfo = head.rpartition("://")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{colon}{user}:***@{rest}" if ":" in userinfo else raw


def bypassed(no_proxy: str, host: str, port: int) -> bool:
    """Whether NO_PROXY says `host` (a name or IP, no brackets) on `port` is reached directly.

    Entries, comma separated: `*` (everything), an IP or CIDR (`10.0.0.0/8`, `::1`), a domain (`example.com`
    matches it and its subdomains; `.example.com` and `*.example.com` only subdomains), each optionally with
    `:PORT` (then only that port, the scheme's default counting: `registry:443` matches https://registry).
    """
    name = host.strip().lower().rstrip(".")
    try:
        ip: Optional[_Address] = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        try:
            network: Optional[_Network] = ipaddress.ip_network(entry, strict=False) if "/" in entry else None
        except ValueError:
            network = None
        if network is not None:
            if ip is not None and ip.version == network.version and ip in network:
                return True
            continue
        entry_host, entry_port = split_host(entry)
        if entry_port is not None and entry_port != port:
            continue
        try:
            entry_ip: Optional[_Address] = ipaddress.ip_address(entry_host)
        except ValueError:
            entry_ip = None
        if entry_ip is not None:
            if ip is not None and ip == entry_ip:
                return True
            continue
        if ip is not None or not entry_host:
            continue
        entry_host = entry_host.rstrip(".")
        if entry_host.startswith("*."):
            entry_host = entry_host[1:]
        if entry_host.startswith("."):
            if name.endswith(entry_host):
                return True
        elif name == entry_host or name.endswith("." + entry_host):
            return True
    return False
