"""TLS trust for registries: the system's roots, plus --ca-bundle, plus Docker's per-registry certs.d.

Docker's layout (https://docs.docker.com/engine/security/certificates/): a directory per registry,
`<root>/<host[:port]>/`, holding CA certificates `*.crt` and client certificate pairs `NAME.cert` +
`NAME.key`. The roots are /etc/docker/certs.d and, for rootless Docker, $XDG_CONFIG_HOME/docker/certs.d
(else ~/.config/docker/certs.d); LAMINA_CERTS_D (a PATH-style list) replaces them.
"""
from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from urllib3.util.ssl_ import create_urllib3_context

from lamina.registry.errors import RegistryError

SYSTEM_CERTS_D = "/etc/docker/certs.d"


def certs_d_roots(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The certs.d directories the environment implies (LAMINA_CERTS_D if set, else Docker's two)."""
    if "LAMINA_CERTS_D" in environ:
        return tuple(p for p in environ["LAMINA_CERTS_D"].split(os.pathsep) if p)
    config = environ.get("XDG_CONFIG_HOME") or (os.path.join(environ["HOME"], ".config") if environ.get("HOME")
                                                 else "")
    return (SYSTEM_CERTS_D,) + ((os.path.join(config, "docker", "certs.d"),) if config else ())


@dataclass(frozen=True)
class HostCerts:
    """What certs.d holds for one registry: CA files and (certificate, key) pairs, in name order."""

    cas: tuple[str, ...] = ()
    client_pairs: tuple[tuple[str, str], ...] = ()


def host_certs(roots: Sequence[str], host: str) -> HostCerts:
    """The files of `<root>/<host>/` in every root (`host` as in a reference: `name` or `name:port`)."""
    cas: list[str] = []
    pairs: list[tuple[str, str]] = []
    for root in roots:
        directory = os.path.join(root, host)
        try:
            names = sorted(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            raise RegistryError(f"cannot read {directory} ({e.strerror}); fix its permissions or remove it") from None
        for name in names:
            path = os.path.join(directory, name)
            if name.endswith(".crt"):
                cas.append(path)
            elif name.endswith(".cert"):
                key = path[:-len(".cert")] + ".key"
                if not os.path.exists(key):
                    raise RegistryError(f"{path} has no key {os.path.basename(key)} beside it; "
                                        "a client certificate needs both (as Docker requires)")
                pairs.append((path, key))
            elif name.endswith(".key") and not os.path.exists(path[:-len(".key")] + ".cert"):
                raise RegistryError(f"{path} has no certificate {name[:-len('.key')]}.cert beside it; "
                                    "a client key needs both (as Docker requires)")
    return HostCerts(tuple(cas), tuple(pairs))


def ssl_context(ca_bundle: Optional[str], certs: HostCerts = HostCerts()) -> ssl.SSLContext:
    """A verifying context trusting the system's roots (OpenSSL's default paths, which honour SSL_CERT_FILE
    and SSL_CERT_DIR) plus `ca_bundle` and the certs.d CAs, presenting the certs.d client certificate if any."""
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    context.load_default_certs()
    for path, what in ([(ca_bundle, "--ca-bundle")] if ca_bundle else []) + [(p, "certs.d") for p in certs.cas]:
        try:
            context.load_verify_locations(cafile=path)
        except ssl.SSLError as e:  # an OSError too: first
            raise RegistryError(f"{what} {path}: no PEM certificates in it ({e.reason or e}); "
                                "give a file of -----BEGIN CERTIFICATE----- blocks") from None
        except OSError as e:
            raise RegistryError(f"{what} {path}: cannot read it ({e.strerror or e}); give a readable PEM file") from None
    for cert, key in certs.client_pairs[:1]:  # the first pair, as Go offers the first that fits
        try:
            context.load_cert_chain(cert, key)
        except OSError as e:  # ssl.SSLError included
            detail = getattr(e, "reason", None) or e.strerror or str(e)
            raise RegistryError(f"certs.d {cert}: cannot load it with {os.path.basename(key)} ({detail}); "
                                "give a PEM certificate and its unencrypted key") from None
    return context
