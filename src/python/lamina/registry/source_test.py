"""Tests of registry sources against an in-memory registry: resolving a tag, reading, counting bytes."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Optional

import pytest

from lamina.errors import InvalidSource
from lamina.extract import extract
from lamina.model import Platform
from lamina.registry.client import RegistryClient
from lamina.registry.errors import UnpinnedReference
from lamina.registry.source import open_registry_image, resolve
from lamina.registry.transport import RegistryOptions, Reply
from lamina.select import parse_selector, select
from lamina_testing.images import FakeImage, FakeLayer, sha, write_oci_dir, write_oci_multi

HOST = "registry.test"
AMD = FakeImage([FakeLayer({"a": b"a" * 3000}, "ADD a /"), FakeLayer({"b": b"b" * 5000}, "RUN b", "gzip")])
ARM = FakeImage([FakeLayer({"arm": b"r" * 100})], architecture="arm64")


class _Raw:
    """The streamed body of a blob GET, as urllib3 gives it."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)

    def read(self, n: int, decode_content: bool = False) -> bytes:
        return self._f.read(n)

    def release_conn(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Registry:
    """A transport answering for repository `team/app`: its tags, manifests by digest and blobs."""

    host = HOST

    def __init__(self, layout: Path, tag: str = "1") -> None:
        self.blobs = {"sha256:" + p.name: p.read_bytes() for p in (layout / "blobs" / "sha256").iterdir()}
        top = json.loads((layout / "index.json").read_text())["manifests"]
        self.tags = {tag: top[0]["digest"]}
        self.types = {d["digest"]: d["mediaType"] for d in top}
        self.requests: list[tuple[str, str]] = []

    def _doc_type(self, digest: str) -> str:
        return self.types.get(digest) or json.loads(self.blobs[digest]).get("mediaType", "")

    def request(self, method: str, path: str, *, stream: bool = False, **_: object) -> Reply:
        self.requests.append((method, path))
        kind, _, target = path.rpartition("/")
        digest = self.tags.get(target, target)
        if kind.endswith("/manifests") and digest in self.blobs:
            return Reply(200, {"Content-Type": self._doc_type(digest), "Docker-Content-Digest": digest},
                         self.blobs[digest])
        if kind.endswith("/blobs") and digest in self.blobs:
            return Reply(200, {}, b"", _Raw(self.blobs[digest]))  # type: ignore[arg-type]
        return Reply(404, {}, b'{"errors": [{"code": "MANIFEST_UNKNOWN"}]}')


def _client(registry: _Registry, warnings: Optional[list] = None, **options: object) -> RegistryClient:
    opts = RegistryOptions(warn=(warnings.append if warnings is not None else lambda m: None), **options)  # type: ignore[arg-type]
    return RegistryClient(HOST, opts, registry)  # type: ignore[arg-type]


def _single(tmp_path: Path) -> _Registry:
    write_oci_dir(AMD, str(tmp_path / "single"))
    return _Registry(tmp_path / "single")


def test_resolve_pins_a_tag_to_its_manifest_digest_in_one_get_keeping_the_tag(tmp_path: Path) -> None:
    registry = _single(tmp_path)
    warnings: list = []
    client = _client(registry, warnings)
    pinned = resolve(f"docker://{HOST}/team/app:1", client.options, client)
    digest = registry.tags["1"]
    assert pinned.url == f"docker://{HOST}/team/app:1@{digest}"
    assert registry.requests == [("GET", "/v2/team/app/manifests/1")]
    assert client.received == len(registry.blobs[digest])
    assert warnings == [f"docker://{HOST}/team/app:1 is a tag, resolved now to {digest}; "
                        f"pin it as docker://{HOST}/team/app@{digest}"]


def test_resolve_of_a_multi_platform_tag_is_the_index_digest_and_reading_it_still_picks_the_platform(
        tmp_path: Path) -> None:
    write_oci_multi(str(tmp_path / "multi"), [(AMD, None), (ARM, None)], nested=True)
    registry = _Registry(tmp_path / "multi")
    client = _client(registry)
    index = registry.tags["1"]
    pinned = resolve(f"{HOST}/team/app:1", client.options, client)
    assert pinned.digest == index and registry.requests == [("GET", "/v2/team/app/manifests/1")]
    image = open_registry_image(pinned.url, client.options, platform=Platform.parse("linux/arm64"), client=client)
    assert image.platform == Platform.parse("linux/arm64")
    assert ("GET", f"/v2/team/app/manifests/{index}") in registry.requests  # by digest now, not by tag


def test_resolve_with_require_pinned_refuses_the_tag_naming_the_digest(tmp_path: Path) -> None:
    registry = _single(tmp_path)
    client = _client(registry, require_pinned=True)
    with pytest.raises(UnpinnedReference, match=f"pin it as docker://{HOST}/team/app@{registry.tags['1']}"):
        resolve(f"docker://{HOST}/team/app:1", client.options, client)


def test_resolve_refuses_a_schema_1_manifest_when_it_looks_up(tmp_path: Path) -> None:
    registry = _single(tmp_path)
    old = json.dumps({"schemaVersion": 1, "name": "team/app", "fsLayers": []}).encode()
    registry.blobs[sha(old)] = old
    registry.types[sha(old)] = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    registry.tags["old"] = sha(old)
    client = _client(registry)
    with pytest.raises(InvalidSource, match="schema 1"):
        resolve(f"docker://{HOST}/team/app:old", client.options, client)


def test_a_tag_pinned_by_digest_reads_by_digest_without_a_warning(tmp_path: Path) -> None:
    registry = _single(tmp_path)
    warnings: list = []
    client = _client(registry, warnings)
    digest = registry.tags["1"]
    image = open_registry_image(f"docker://{HOST}/team/app:1@{digest}", client.options,
                                name=f"docker://{HOST}/team/app:1", client=client)
    assert warnings == [] and registry.requests[0] == ("GET", f"/v2/team/app/manifests/{digest}")
    assert image.source == f"docker://{HOST}/team/app:1" and image.tags == ("1",)


def test_the_client_counts_the_manifest_config_and_only_the_selected_layers_it_receives(tmp_path: Path) -> None:
    registry = _single(tmp_path)
    client = _client(registry)
    digest = registry.tags["1"]
    image = open_registry_image(f"docker://{HOST}/team/app@{digest}", client.options, client=client)
    manifest = json.loads(registry.blobs[digest])
    before = len(registry.blobs[digest]) + manifest["config"]["size"]
    assert client.received == before
    out = str(tmp_path / "out")
    extract(image, select(image, parse_selector("-1")), out, "-1")
    top = manifest["layers"][-1]
    assert client.received == before + top["size"]
    assert os.path.isfile(os.path.join(out, "blobs", "sha256", top["digest"][7:]))
