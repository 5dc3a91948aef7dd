"""Tests of reading `docker save` archives, classic and Docker 25+, by tag, and malformed ones."""
from __future__ import annotations

import json

import pytest

from lamina.errors import DigestMismatch, InvalidSource
from lamina.formats.docker_archive import read_docker_archive
from lamina.formats.store import TarSource
from lamina.model import DOCKER_CONFIG, DOCKER_MANIFEST, OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD
from lamina.sources import open_image
from lamina.validate import validate
from lamina_testing.images import (
    FakeImage,
    FakeLayer,
    sha,
    write_docker_classic,
    write_docker_oci,
    write_tar,
)

MEDIA = {"none": OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}


def _image(compression: str = "none", arch: str = "amd64") -> FakeImage:
    return FakeImage(
        [
            FakeLayer({"etc/": None, "etc/os-release": b"ID=fake\n"}, "ADD rootfs /", compression),
            FakeLayer({"usr/bin/tool": b"#!/bin/sh\necho " + arch.encode() + b"\n"}, "RUN make tool", compression),
        ],
        architecture=arch,
        empty_history=[(1, "ENV A=1"), (2, 'CMD ["tool"]')],
    )


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_classic_archive_reads_layers_config_and_tags(tmp_path, compression: str) -> None:  # type: ignore[no-untyped-def]
    fake = _image(compression)
    path = str(tmp_path / "saved.tar")
    write_docker_classic({"app:1": fake}, path)
    image = open_image("docker-archive:" + path)
    assert image.tags == ("app:1",)
    assert image.manifest_media_type == DOCKER_MANIFEST
    assert image.config_bytes == fake.config_bytes()
    assert image.config_descriptor.digest == sha(fake.config_bytes())
    assert image.config_descriptor.media_type == DOCKER_CONFIG
    assert str(image.platform) == "linux/amd64"
    assert image.diff_ids == tuple(sha(l.tar) for l in fake.layers)
    assert [l.descriptor.digest for l in image.layers] == [sha(l.blob) for l in fake.layers]
    assert [l.descriptor.size for l in image.layers] == [len(l.blob) for l in fake.layers]
    assert {l.descriptor.media_type for l in image.layers} == {MEDIA[compression]}
    assert [l.created_by for l in image.layers] == ["ADD rootfs /", "RUN make tool"]
    assert [l.index for l in image.layers] == [0, 1]
    assert validate(image).layers == 2
    with image.layers[1].open_blob() as f:
        assert f.read() == fake.layers[1].blob


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_docker25_archive_takes_digests_from_blob_names(tmp_path, compression: str) -> None:  # type: ignore[no-untyped-def]
    fake = _image(compression)
    path = str(tmp_path / "saved.tar")
    write_docker_oci(fake, "app:2", path)
    image = open_image("docker-archive:" + path)
    assert image.tags == ("app:2",)
    assert image.diff_ids == tuple(sha(l.tar) for l in fake.layers)
    assert [(l.descriptor.digest, l.descriptor.media_type) for l in image.layers] == [
        (sha(l.blob), MEDIA[compression]) for l in fake.layers
    ]
    assert validate(image).bytes == sum(len(l.blob) for l in fake.layers)


def _multi(tmp_path) -> str:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "multi.tar")
    write_docker_classic({"app:1": _image(arch="amd64"), "other/app:latest": _image(arch="arm64"),
                          "registry.example:5000/x/y:v2": _image("gzip")}, path)
    return path


@pytest.mark.parametrize(
    "tag, arch",
    [("app:1", "amd64"), ("other/app", "arm64"), ("other/app:latest", "arm64"), ("registry.example:5000/x/y:v2", "amd64")],
    ids=["exact", "implicit-latest", "explicit-latest", "registry-with-port"],
)
def test_multi_image_archive_picks_by_tag(tmp_path, tag: str, arch: str) -> None:  # type: ignore[no-untyped-def]
    image = open_image(f"docker-archive:{_multi(tmp_path)}:{tag}")
    assert image.platform.architecture == arch
    assert len(image.tags) == 1 and image.tags[0].startswith(tag)


def test_multi_image_archive_without_tag_lists_tags(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _multi(tmp_path)
    with pytest.raises(InvalidSource) as e:
        open_image("docker-archive:" + path)
    assert str(e.value) == (
        f"{path}: holds 3 images; name one as docker-archive:{path}:TAG "
        "(tags: app:1, other/app:latest, registry.example:5000/x/y:v2)"
    )


def test_unknown_tag_lists_the_tags_there_are(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _multi(tmp_path)
    with pytest.raises(InvalidSource, match=r"no image tagged 'app:9'; it has app:1, other/app:latest, registry"):
        open_image(f"docker-archive:{path}:app:9")


def _raw(tmp_path, manifest: object, members: list) -> TarSource:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "raw.tar")
    write_tar(path, [("manifest.json", json.dumps(manifest).encode())] + members)
    return TarSource(path)


@pytest.mark.parametrize(
    "manifest, message",
    [
        ({"Config": "c.json"}, "manifest.json is not a non-empty list of images"),
        ([], "manifest.json is not a non-empty list of images"),
        ([{"Config": "c.json"}], "manifest.json entry needs Config and Layers"),
        ([{"Config": "c.json", "Layers": [1]}], "manifest.json entry needs Config and Layers"),
        ([{"Config": "c.json", "Layers": []}], "manifest.json lists 0 layers but the config has 1 diff_ids"),
    ],
    ids=["not-list", "empty", "no-layers", "layer-not-string", "count-mismatch"],
)
def test_malformed_manifest_json(tmp_path, manifest: object, message: str) -> None:  # type: ignore[no-untyped-def]
    fake = FakeImage([FakeLayer({"a": b"a"})])
    source = _raw(tmp_path, manifest, [("c.json", fake.config_bytes())])
    with pytest.raises(InvalidSource, match=message):
        read_docker_archive(source, "raw")


def test_config_named_by_digest_must_have_that_digest(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fake = FakeImage([FakeLayer({"a": b"a"})])
    name = "0" * 64 + ".json"
    source = _raw(tmp_path, [{"Config": name, "Layers": ["l.tar"]}],
                  [(name, fake.config_bytes()), ("l.tar", fake.layers[0].blob)])
    with pytest.raises(DigestMismatch, match=f"config {name} has content {sha(fake.config_bytes())}"):
        read_docker_archive(source, "raw")


def test_uncompressed_classic_layer_is_checked_against_its_diff_id(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fake = FakeImage([FakeLayer({"a": b"a"})])
    source = _raw(tmp_path, [{"Config": "c.json", "Layers": ["l.tar"]}],
                  [("c.json", fake.config_bytes()), ("l.tar", FakeLayer({"b": b"b"}).blob)])
    image = read_docker_archive(source, "raw")
    assert image.layers[0].descriptor.digest == sha(fake.layers[0].tar)  # taken from the config ...
    with pytest.raises(DigestMismatch, match="blob content is " + sha(FakeLayer({"b": b"b"}).blob)):
        validate(image)  # ... and checked when read


def _retagged(tmp_path, repo_tags) -> str:  # type: ignore[no-untyped-def]
    """A classic archive whose manifest.json entry has `repo_tags` as its RepoTags."""
    path = str(tmp_path / "saved.tar")
    write_docker_classic({"app:1": _image()}, path)
    import tarfile

    with tarfile.open(path) as tf:
        members = [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]  # type: ignore[union-attr]
    manifest = json.loads(dict(members)["manifest.json"])
    manifest[0]["RepoTags"] = repo_tags
    write_tar(path, [(n, json.dumps(manifest).encode() if n == "manifest.json" else d) for n, d in members])
    return path


@pytest.mark.parametrize("repo_tags", [True, 5, [{}], [1]], ids=["bool", "int", "dicts", "ints"])
def test_repo_tags_of_the_wrong_type_are_no_tags(tmp_path, repo_tags) -> None:  # type: ignore[no-untyped-def]
    path = _retagged(tmp_path, repo_tags)  # found by lamina_fuzz: TypeError / AttributeError
    assert open_image("docker-archive:" + path).tags == ()
    with pytest.raises(InvalidSource, match="no image tagged 'zzz'; it has no tags$"):
        open_image(f"docker-archive:{path}:zzz")


def test_a_tag_with_a_newline_is_shown_escaped_in_a_one_line_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _retagged(tmp_path, ["a\nb:1"])  # found by lamina_fuzz: the message had two lines
    with pytest.raises(InvalidSource, match=r"it has 'a\\nb:1'$"):
        open_image(f"docker-archive:{path}:zzz")
