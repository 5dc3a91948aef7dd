"""A registry made of a bundle's members, behind lamina's real Transport (in place of urllib3's pool).

Members whose header is `METHOD PATH-OR-URL` are answers, written as HTTP is: a status line,
header lines, a blank line, the body; several for one request are given in turn (the last one
repeats). Every other member is a document served at `/v2/<repo>/manifests/<its digest>` and
`/v2/<repo>/blobs/<its digest>`, its header being its Content-Type. Options: `@ref` (the image to
pull), `@platform`, `@docker-config` (config.json content; one naming credential helpers is dropped,
as helpers would run programs the input names).
"""
from __future__ import annotations

import hashlib
import io
import urllib.parse
from typing import Optional

from urllib3 import HTTPHeaderDict

from lamina.image import Image
from lamina.model import Platform
from lamina.registry.auth import parse_docker_config
from lamina.registry.client import RegistryClient
from lamina.registry.reference import parse_reference
from lamina.registry.retry import RetryPolicy
from lamina.registry.source import open_registry_image
from lamina.registry.transport import RegistryOptions, Transport
from lamina_fuzz.bundle import Bundle
from lamina_fuzz.contract import Run

DEFAULT_REF = "docker://registry.fuzz/team/app:1"
_METHODS = ("GET ", "HEAD ", "POST ", "PUT ", "PATCH ")
_NO_WAIT = RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0, retry_after_cap=0.0, window=0.0)


class _Response:
    """The part of urllib3's response lamina's transport and blob stream use."""

    def __init__(self, status: int, headers: HTTPHeaderDict, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self._body = io.BytesIO(body)

    def read(self, amt: Optional[int] = None, decode_content: bool = True) -> bytes:
        return self._body.read(-1 if amt is None else amt)

    def drain_conn(self) -> None:
        self._body.read()

    def release_conn(self) -> None:
        pass

    def close(self) -> None:
        pass


def _parse_answer(content: bytes) -> tuple[int, HTTPHeaderDict, bytes]:
    head, _, body = content.partition(b"\n\n")
    lines = head.decode("latin-1").split("\n")
    try:
        status = int(lines[0].strip()[:3])
    except ValueError:
        status = 200
    headers = HTTPHeaderDict()
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers.add(key.strip(), value.strip())
    return status, headers, body


class FakePool:
    """Answers requests from the bundle; anything it has no answer for is a 404."""

    def __init__(self, bundle: Bundle, host: str) -> None:
        self._host = host
        self._answers: dict[str, list[bytes]] = {}
        self._docs: dict[str, tuple[str, bytes]] = {}
        self._served: dict[str, int] = {}
        for m in bundle.members:
            if m.kind != "file":
                continue
            if m.name.startswith(_METHODS):
                method, _, where = m.name.partition(" ")
                self._answers.setdefault(f"{method} {self._key(where.strip())}", []).append(m.content)
            else:
                digest = "sha256:" + hashlib.sha256(m.content).hexdigest()
                self._docs.setdefault(digest, (m.name, m.content))

    def _key(self, url: str) -> str:
        try:
            parts = urllib.parse.urlsplit(url)
        except ValueError:  # a member header that is no URL ("[" unclosed): taken as it is
            return url
        if not parts.netloc or parts.netloc == self._host:
            return parts.path
        return f"{parts.scheme}://{parts.netloc}{parts.path}"

    def request(self, method: str, url: str, body: object = None, headers: object = None, **_: object) -> _Response:
        key = f"{method} {self._key(url)}"
        answers = self._answers.get(key)
        if answers:
            n = self._served.get(key, 0)
            self._served[key] = n + 1
            status, hdrs, data = _parse_answer(answers[min(n, len(answers) - 1)])
        else:
            status, hdrs, data = self._document(method, self._key(url))
        return _Response(status, hdrs, b"" if method == "HEAD" else data)

    def _document(self, method: str, path: str) -> tuple[int, HTTPHeaderDict, bytes]:
        for kind in ("/manifests/", "/blobs/"):
            if kind in path:
                doc = self._docs.get(path.rsplit("/", 1)[-1])
                if doc is not None:
                    headers = HTTPHeaderDict({"Content-Type": doc[0], "Content-Length": str(len(doc[1]))})
                    return 200, headers, doc[1]
        return 404, HTTPHeaderDict(), b""


def registry_image(bundle: Bundle, run: Run) -> Optional[Image]:
    """The image the bundle's registry serves for `@ref`."""
    text = bundle.option("ref") or DEFAULT_REF
    ref = parse_reference(text)
    config_path = ""
    config = bundle.option("docker-config")
    if config is not None:
        data = config.encode("utf-8", "surrogateescape")
        parsed = parse_docker_config(data, "config.json")
        if not parsed.cred_helpers and not parsed.creds_store:
            config_path = run.path("config.json")
            with open(config_path, "wb") as f:
                f.write(data)
    run.inputs_written()
    options = RegistryOptions(docker_config=config_path, retry=_NO_WAIT, warn=lambda message: None)
    platform_text = bundle.option("platform")
    try:
        platform = Platform.parse(platform_text) if platform_text else None
    except ValueError:
        platform = None
    transport = Transport(ref.api_host, options, pool=FakePool(bundle, ref.api_host))  # type: ignore[arg-type]
    client = RegistryClient(ref.registry, options, transport)
    return open_registry_image(text, options, platform=platform, client=client)
