"""Tests of source references: parsing, sniffing bare paths and opening them as images."""
from __future__ import annotations

import os

import pytest

from lamina.errors import InvalidSource
from lamina.sources import SourceRef, open_image, parse_source, sniff
from lamina_testing.images import (
    FakeImage,
    FakeLayer,
    write_docker_classic,
    write_docker_oci,
    write_oci_archive,
    write_oci_dir,
    write_tar,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("docker-archive:/x/a.tar", SourceRef("docker-archive", "/x/a.tar")),
        ("docker-archive:/x/a.tar:app:1", SourceRef("docker-archive", "/x/a.tar", "app:1")),
        ("docker-archive:/x/a.tar:app", SourceRef("docker-archive", "/x/a.tar", "app")),
        ("oci:dir", SourceRef("oci", "dir")),
        ("oci:dir:v1", SourceRef("oci", "dir", "v1")),
        ("oci-archive:a.tar:latest", SourceRef("oci-archive", "a.tar", "latest")),
        ("some/path.tar", SourceRef("path", "some/path.tar")),
        ("C:thing", SourceRef("path", "C:thing")),
        ("docker://127.0.0.1:5000/a/b:1", SourceRef("docker", "127.0.0.1:5000/a/b:1")),
    ],
    ids=["docker", "docker-tag", "docker-tag-no-version", "oci", "oci-ref", "oci-archive-ref", "bare", "unknown-prefix",
         "registry"],
)
def test_parse_source(text: str, expected: SourceRef) -> None:
    ref = parse_source(text)
    assert ref == expected
    assert str(ref) == text


def test_parse_source_keeps_an_existing_path_with_a_colon_whole(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "a:b.tar"
    path.write_bytes(b"")
    assert parse_source(f"docker-archive:{path}") == SourceRef("docker-archive", str(path))


@pytest.mark.parametrize(
    "text, message",
    [("", "empty image source"), ("oci:", "'oci:': oci: needs a path"),
     ("docker-daemon:busybox", "transport is resolved by the Pants plugin")],
    ids=["empty", "no-path", "daemon"],
)
def test_parse_source_rejects(text: str, message: str) -> None:
    with pytest.raises(InvalidSource, match=message):
        parse_source(text)


FAKE = FakeImage([FakeLayer({"a": b"a"}, "ADD a /"), FakeLayer({"b": b"b"}, "RUN b", "gzip")])


@pytest.mark.parametrize(
    "write, kind",
    [
        (lambda p: write_docker_classic({"x:1": FAKE}, p), "docker-archive"),
        (lambda p: write_docker_oci(FAKE, "x:1", p), "docker-archive"),
        (lambda p: write_oci_archive(FAKE, p, "x:1"), "oci-archive"),
        (lambda p: write_oci_dir(FAKE, p, "x:1"), "oci"),
    ],
    ids=["docker-classic", "docker-25", "oci-archive", "oci-dir"],
)
def test_bare_paths_are_sniffed_and_read_like_the_named_transport(tmp_path, write, kind: str) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "img")
    write(path)
    assert sniff(path) == kind
    bare, named = open_image(path), open_image(f"{kind}:{path}")
    assert bare.source == path
    assert bare.diff_ids == named.diff_ids == tuple(FakeImage.config(FAKE)["rootfs"]["diff_ids"])
    assert [l.descriptor for l in bare.layers] == [l.descriptor for l in named.layers]
    assert bare.tags == ("x:1",)


def test_open_image_records_the_given_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "img")
    write_oci_dir(FAKE, path)
    assert open_image(path, name="//images:base").source == "//images:base"


def test_sniff_rejects_what_is_no_image(tmp_path) -> None:  # type: ignore[no-untyped-def]
    empty_dir = tmp_path / "d"
    empty_dir.mkdir()
    with pytest.raises(InvalidSource, match="directory is not an OCI layout"):
        sniff(str(empty_dir))
    with pytest.raises(InvalidSource, match="no such file or directory"):
        sniff(str(tmp_path / "missing"))
    other = str(tmp_path / "other.tar")
    write_tar(other, [("README", b"hi")])
    with pytest.raises(InvalidSource, match="holds neither manifest.json .docker save. nor oci-layout"):
        sniff(other)


def test_named_transport_must_match_what_is_there(tmp_path) -> None:  # type: ignore[no-untyped-def]
    archive = str(tmp_path / "oci.tar")
    write_oci_archive(FAKE, archive)
    with pytest.raises(InvalidSource, match=r"not a docker save archive \(no manifest.json\)"):
        open_image("docker-archive:" + archive)
    with pytest.raises(InvalidSource, match="no such OCI layout directory"):
        open_image("oci:" + archive)
    with pytest.raises(InvalidSource, match="no such file"):
        open_image("oci-archive:" + os.path.join(str(tmp_path), "nope.tar"))
