"""Where a user's registry credentials and certificates are, written down once per session so that
cached processes can find them without carrying HOME or DOCKER_CONFIG in their cache key.

A registry extraction of a digest-pinned image reads fixed bytes: who the user is and where their
Docker config lives change nothing in its output, so those must not be part of its key (Pants keys
a process on its whole environment, and another machine's HOME is another key). A per-session
step, which sees the user's environment, writes the locations (paths only, never a credential) to
a small JSON file in a Pants named cache; cached processes name that file in
LAMINA_CREDENTIALS_FROM, a value that is the same on every machine.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Mapping, Optional

from lamina.registry.auth import config_path
from lamina.registry.tls import certs_d_roots

CREDENTIALS_FROM = "LAMINA_CREDENTIALS_FROM"
_LIMIT = 64 << 10


def locations(environ: Mapping[str, str]) -> dict:
    """The Docker config file and certs.d roots `environ` implies, as `from_environ` finds them, and
    the PATH its credential helpers (`docker-credential-*`) are looked up on."""
    return {"docker_config": config_path(environ), "certs_d": list(certs_d_roots(environ)),
            "helper_path": environ.get("PATH", "")}


def write_locations(path: str, environ: Mapping[str, str]) -> None:
    """`locations(environ)` as JSON at `path`, replaced whole (a reader sees the old file or the new)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    data = json.dumps(locations(environ), sort_keys=True).encode()
    fd, tmp = tempfile.mkstemp(prefix=".where-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_locations(path: str) -> Optional[tuple[str, tuple[str, ...], str]]:
    """(docker config path, certs.d roots, helper PATH) from a file `write_locations` wrote; None if
    it is missing, too large or not of that shape (the caller then looks in its own environment)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_LIMIT + 1)
    except OSError:
        return None
    if len(raw) > _LIMIT:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    config, roots, helper_path = value.get("docker_config"), value.get("certs_d"), value.get("helper_path", "")
    if not isinstance(config, str) or not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
        return None
    if not isinstance(helper_path, str):
        return None
    return config, tuple(roots), helper_path
