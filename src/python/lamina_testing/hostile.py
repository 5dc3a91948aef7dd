"""Hostile and broken image sources, one builder per flaw, shared by the reader, extract, compose and CLI tests.

Each Case builds its source under a directory and says which error lamina must raise for it and
which text that error must contain. Everything is synthetic (lamina_testing.images).
"""
from __future__ import annotations

import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from typing import Callable, Optional

from lamina.errors import DigestMismatch, InvalidSource, LaminaError, UnsafeArchive
from lamina_testing.images import (
    FakeImage,
    FakeLayer,
    blob_file,
    flip_byte,
    oci_manifest,
    replace_oci_layer,
    rewrite_oci,
    sha,
    write_docker_classic,
    write_oci_dir,
    write_oci_multi,
    write_tar,
)


def image(compression: str = "gzip") -> FakeImage:
    """A two-layer image whose top layer has enough bytes to cut in half."""
    payload = bytes(range(256)) * 64
    return FakeImage([
        FakeLayer({"etc/": None, "etc/base": b"base\n"}, "ADD base /", "none"),
        FakeLayer({"app/data": payload, "app/tool": b"#!/bin/sh\n"}, "RUN make", compression),
    ])


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[str], str]  # directory -> source reference
    error: type  # the LaminaError subclass expected
    message: str  # a regular expression the message must match (re.search)
    platform: Optional[str] = None  # --platform to open it with


def _oci(d: str, compression: str = "gzip") -> str:
    path = os.path.join(d, "oci")
    write_oci_dir(image(compression), path)
    return path


def truncated_docker_archive(d: str) -> str:
    path = os.path.join(d, "saved.tar")
    write_docker_classic({"app:1": image("none")}, path, manifest_first=True)
    with tarfile.open(path) as tf:
        last = tf.getmembers()[-1]
    with open(path, "r+b") as f:
        f.truncate(last.offset_data + last.size // 2)
    return "docker-archive:" + path


def _truncated_layer(compression: str) -> Callable[[str], str]:
    def build(d: str) -> str:
        path = _oci(d, compression)
        blob = image(compression).layers[1].blob
        replace_oci_layer(path, 1, blob[: len(blob) // 2])  # digest and size describe the cut blob
        return "oci:" + path
    return build


def flipped_byte_oci(d: str) -> str:
    path = _oci(d)
    flip_byte(blob_file(path, oci_manifest(path)["layers"][1]["digest"]), 40)
    return "oci:" + path


def flipped_byte_docker(d: str) -> str:
    path = os.path.join(d, "saved.tar")
    write_docker_classic({"app:1": image("none")}, path)
    with tarfile.open(path) as tf:
        layer = next(m for m in tf.getmembers() if m.name.endswith("layer.tar") and m.size > 10000)
    flip_byte(path, layer.offset_data + 700)
    return "docker-archive:" + path


def lying_digest(d: str) -> str:
    path = _oci(d)
    real = oci_manifest(path)["layers"][1]["digest"]
    lie = sha(b"some other layer")
    shutil.copy(blob_file(path, real), blob_file(path, lie))

    def edit(m: dict) -> None:
        m["layers"][1]["digest"] = lie

    rewrite_oci(path, manifest=edit)
    return "oci:" + path


def _lying_size(delta: int) -> Callable[[str], str]:
    def build(d: str) -> str:
        path = _oci(d)

        def edit(m: dict) -> None:
            m["layers"][1]["size"] += delta

        rewrite_oci(path, manifest=edit)
        return "oci:" + path
    return build


def _docker_manifest(entry: dict) -> Callable[[str], str]:
    """A docker save archive whose manifest.json entry is `entry` (other members: one config, one layer)."""
    def build(d: str) -> str:
        img = FakeImage([FakeLayer({"a": b"a"})])
        path = os.path.join(d, "saved.tar")
        write_tar(path, [
            ("manifest.json", json.dumps([entry]).encode()),
            ("c.json", img.config_bytes()),
            ("l/layer.tar", img.layers[0].blob),
        ])
        return "docker-archive:" + path
    return build


def _archive_with(name: str, value: object) -> Callable[[str], str]:
    """A docker save archive that would be fine but for one extra member."""
    def build(d: str) -> str:
        img = FakeImage([FakeLayer({"a": b"a"})])
        path = os.path.join(d, "saved.tar")
        write_tar(path, [
            ("manifest.json", json.dumps([{"Config": "c.json", "RepoTags": ["a:1"], "Layers": ["l/layer.tar"]}]).encode()),
            ("c.json", img.config_bytes()),
            ("l/layer.tar", img.layers[0].blob),
            (name, value),  # type: ignore[list-item]
        ])
        return path
    return build


def blob_symlink_outside(d: str) -> str:
    path = _oci(d)
    outside = os.path.join(d, "outside")
    blob = blob_file(path, oci_manifest(path)["layers"][1]["digest"])
    os.rename(blob, outside)
    os.symlink(outside, blob)
    return "oci:" + path


def _bad_file(name: str) -> Callable[[str], str]:
    def build(d: str) -> str:
        path = _oci(d)
        with open(os.path.join(path, name), "wb") as f:
            f.write(b'{"schemaVersion": 2, "manifests": [')
        return "oci:" + path
    return build


def bad_config_json(d: str) -> str:
    path = _oci(d)
    rewrite_oci(path, config=lambda c: b'{"architecture": "amd64",')
    return "oci:" + path


def bad_manifest_json(d: str) -> str:
    path = os.path.join(d, "saved.tar")
    write_tar(path, [("manifest.json", b"[{]")])
    return "docker-archive:" + path


def unknown_media_type(d: str) -> str:
    path = _oci(d)

    def edit(m: dict) -> None:
        m["layers"][1]["mediaType"] = "application/vnd.example.layer.v1.tar+lz4"

    rewrite_oci(path, manifest=edit)
    return "oci:" + path


def no_matching_platform(d: str) -> str:
    path = os.path.join(d, "multi")
    base = image()
    arm = FakeImage(base.layers, architecture="arm64", variant="v8")
    write_oci_multi(path, [(base, None), (arm, None)], nested=True)
    return "oci:" + path


def uncompressed_not_diff_id(d: str) -> str:
    path = _oci(d, "none")

    def edit(c: dict) -> None:
        c["rootfs"]["diff_ids"][1] = sha(b"not this layer")

    rewrite_oci(path, config=edit)
    return "oci:" + path


CASES = (
    Case("truncated-archive", truncated_docker_archive, InvalidSource,
         r"saved\.tar: not a readable tar archive \(unexpected end of data\)"),
    Case("truncated-gzip-layer", _truncated_layer("gzip"), InvalidSource, r"truncated gzip layer"),
    Case("truncated-zstd-layer", _truncated_layer("zstd"), InvalidSource, r"truncated zstd layer"),
    Case("flipped-byte-oci", flipped_byte_oci, DigestMismatch, r"blob content is sha256:[0-9a-f]{64}, expected"),
    Case("flipped-byte-docker", flipped_byte_docker, DigestMismatch, r"blob content is sha256:[0-9a-f]{64}, expected"),
    Case("manifest-lies-digest", lying_digest, DigestMismatch, r"expected " + sha(b"some other layer")),
    Case("manifest-lies-size-larger", _lying_size(+10), DigestMismatch, r"its descriptor says \d+ \(truncated"),
    Case("manifest-lies-size-smaller", _lying_size(-10), DigestMismatch, r"larger than its declared size"),
    Case("manifest-json-layer-outside", _docker_manifest({"Config": "c.json", "Layers": ["../x/layer.tar"]}),
         UnsafeArchive, r"'\.\./x/layer\.tar' escapes the archive with '\.\.'"),
    Case("manifest-json-config-outside", _docker_manifest({"Config": "../c.json", "Layers": ["l/layer.tar"]}),
         UnsafeArchive, r"'\.\./c\.json' escapes the archive"),
    Case("manifest-json-layer-missing", _docker_manifest({"Config": "c.json", "Layers": ["nope/layer.tar"]}),
         InvalidSource, r"layer 'nope/layer\.tar' is not in the archive"),
    Case("tar-entry-dotdot", _archive_with("../evil", b"x"), UnsafeArchive, r"'\.\./evil' escapes the archive"),
    Case("tar-entry-nested-dotdot", _archive_with("l/../../evil", b"x"), UnsafeArchive, r"escapes the archive"),
    Case("tar-entry-absolute", _archive_with("/etc/evil", b"x"), UnsafeArchive, r"'/etc/evil' has an absolute path"),
    Case("tar-symlink-escapes", _archive_with("l/link", "->../../etc/passwd"), UnsafeArchive,
         r"link 'l/link' points outside the archive"),
    Case("tar-symlink-absolute", _archive_with("link", "->/etc/passwd"), UnsafeArchive,
         r"points to absolute path '/etc/passwd'"),
    Case("tar-hardlink-escapes", _archive_with("hard", "=>../etc/passwd"), UnsafeArchive, r"points outside"),
    Case("oci-blob-symlink-outside", blob_symlink_outside, InvalidSource, r"points outside the layout"),
    Case("invalid-json-manifest-json", bad_manifest_json, InvalidSource, r"manifest\.json: malformed JSON"),
    Case("invalid-json-index-json", _bad_file("index.json"), InvalidSource, r"index\.json: malformed JSON"),
    Case("invalid-json-oci-layout", _bad_file("oci-layout"), InvalidSource, r"oci-layout: malformed JSON"),
    Case("invalid-json-config", bad_config_json, InvalidSource, r"config: malformed JSON"),
    Case("unknown-layer-media-type", unknown_media_type, InvalidSource,
         r"layer 1: unknown layer media type 'application/vnd\.example\.layer\.v1\.tar\+lz4'"),
    Case("no-matching-platform", no_matching_platform, InvalidSource,
         r"no image for platform linux/s390x \(it has linux/amd64, linux/arm64/v8\)", platform="linux/s390x"),
    Case("uncompressed-digest-not-diff-id", uncompressed_not_diff_id, DigestMismatch,
         r"(does not match its diff_id|the config says) " + sha(b"not this layer")),
)

assert all(issubclass(c.error, LaminaError) for c in CASES)
