"""Tests of which sources `lamina layers` lists platform by platform (sources.source_platforms):
only one multi-platform image whose platforms' manifests are there; every other source, hostile
or odd ones included, is listed as before (one image, or open_image's own error)."""
from __future__ import annotations

import io
import json
import os
import tarfile

import pytest

from lamina.cli import main
from lamina.index import build_index, parse_index_spec
from lamina.model import Platform
from lamina.sources import open_image, source_platforms
from lamina_testing.images import (FakeImage, FakeLayer, sha, tree, write_docker_classic, write_docker_oci,
                                   write_oci_dir, write_oci_multi, write_tar)

AMD = FakeImage([FakeLayer({"bin/sh": b"amd64 sh"}, "ADD rootfs /")])
ARM = FakeImage([FakeLayer({"bin/sh": b"arm64 sh"}, "ADD rootfs /")], architecture="arm64")
BOTH = (Platform("linux", "amd64"), Platform("linux", "arm64"))


def _partial_save(tmp_path) -> str:  # type: ignore[no-untyped-def]
    """`docker pull alpine; docker save alpine` on Docker 25+ (containerd store): the index names
    every platform, the archive holds only the pulled one's manifest, config and layers."""
    write_oci_multi(str(tmp_path / "multi"), [(AMD, None), (ARM, None)], nested=True)
    files = tree(str(tmp_path / "multi"))
    top = json.loads(files["index.json"])
    top["manifests"][0]["annotations"] = {"org.opencontainers.image.ref.name": "app:1"}
    files["index.json"] = json.dumps(top).encode()
    for blob in [ARM.config_bytes()] + [l.blob for l in ARM.layers]:
        files.pop("blobs/sha256/" + sha(blob)[7:])
    nested = json.loads(files["blobs/sha256/" + top["manifests"][0]["digest"][7:]])
    files.pop("blobs/sha256/" + nested["manifests"][1]["digest"][7:])
    files["manifest.json"] = json.dumps([{
        "Config": "blobs/sha256/" + sha(AMD.config_bytes())[7:], "RepoTags": ["app:1"],
        "Layers": ["blobs/sha256/" + sha(l.blob)[7:] for l in AMD.layers]}]).encode()
    write_tar(str(tmp_path / "saved.tar"), sorted(files.items()))
    return str(tmp_path / "saved.tar")


@pytest.mark.parametrize("transport", ["", "oci-archive:"])
def test_an_archive_of_one_pulled_platform_is_one_image(tmp_path, capsys, transport: str) -> None:  # type: ignore[no-untyped-def]
    path = transport + _partial_save(tmp_path)
    assert source_platforms(path) == ()
    assert main(["layers", path, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["platform"] == "linux/amd64" and len(doc["layers"]) == 1


@pytest.mark.parametrize("index", [b'{"manifests": 5}', b"not json",
                                   b'{"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json",'
                                   b'"digest":"sha256:' + b"0" * 64 + b'","size":10}]}'])
def test_a_docker_archive_whose_oci_index_is_bad_is_read_from_manifest_json(tmp_path, capsys, index: bytes) -> None:  # type: ignore[no-untyped-def]
    good, bad = str(tmp_path / "a.tar"), str(tmp_path / "b.tar")
    write_docker_oci(AMD, "app:1", good)
    with tarfile.open(good) as t, tarfile.open(bad, "w") as o:
        for m in t.getmembers():
            body = t.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            if m.name == "index.json":
                body, m.size = index, len(index)
            o.addfile(m, io.BytesIO(body) if body is not None else None)
    assert source_platforms(bad) == ()
    assert main(["layers", bad]) == 0
    assert "index of" not in capsys.readouterr().out


@pytest.mark.parametrize("media_type", [["x"], {"a": 1}])
def test_a_media_type_that_is_no_string_is_one_error_line(tmp_path, capsys, media_type) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "oci")
    write_oci_dir(AMD, path)
    index = json.load(open(os.path.join(path, "index.json")))
    index["manifests"][0]["mediaType"] = media_type
    json.dump(index, open(os.path.join(path, "index.json"), "w"))
    assert main(["layers", "oci:" + path]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lamina: error: ") and "Traceback" not in err


def test_one_image_under_two_tags_is_one_image(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "oci")
    write_oci_multi(path, [(AMD, "app:1")])
    index = json.load(open(os.path.join(path, "index.json")))
    twin = dict(index["manifests"][0], annotations={"org.opencontainers.image.ref.name": "app:2"})
    index["manifests"].append(twin)
    json.dump(index, open(os.path.join(path, "index.json"), "w"))
    assert source_platforms("oci:" + path) == ()
    assert main(["layers", "oci:" + path]) == 0
    assert "index of" not in capsys.readouterr().out


def test_two_images_under_their_own_tags_are_no_multi_platform_image(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "oci")
    write_oci_multi(path, [(AMD, "a"), (ARM, "b")])
    assert source_platforms("oci:" + path) == ()
    assert main(["layers", "oci:" + path]) == 2  # as before: name one
    assert "name one" in capsys.readouterr().err
    assert source_platforms("oci:" + path + ":b") == ()


def test_lamina_s_own_index_under_two_tags_lists_both_platforms(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    write_oci_dir(AMD, str(tmp_path / "amd"))
    write_oci_dir(ARM, str(tmp_path / "arm"))
    spec = {"format": "oci", "tags": ["app:1", "app:latest"], "platforms": [
        {"platform": p, "base": "scratch", "layers": [{"source": "oci:" + str(tmp_path / d), "layer": ":"}]}
        for p, d in (("linux/amd64", "amd"), ("linux/arm64", "arm"))]}
    build_index(parse_index_spec(spec), str(tmp_path / "out"))
    for ref in ("", ":app:1"):
        assert source_platforms("oci:" + str(tmp_path / "out") + ref) == BOTH
        assert main(["layers", "oci:" + str(tmp_path / "out") + ref]) == 0
        assert "index of 2 platforms" in capsys.readouterr().out


def test_single_image_sources_are_listed_as_before(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    classic, docker25 = str(tmp_path / "c.tar"), str(tmp_path / "d.tar")
    write_docker_classic({"app:1": AMD}, classic)
    write_docker_oci(AMD, "app:1", docker25)
    for path in (classic, docker25):
        assert source_platforms(path) == ()
        assert main(["layers", path, "--json"]) == 0
        assert set(json.loads(capsys.readouterr().out)) == {"source", "platform", "layers"}


def test_a_failure_on_one_platform_of_a_source_names_it(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    amd = FakeImage([AMD.layers[0], FakeLayer({"opt/x": b"x"}, "RUN amd64-only")])
    write_oci_multi(str(tmp_path / "m"), [(amd, None), (ARM, None)], nested=True)
    assert main(["layers", "oci:" + str(tmp_path / "m"), "--select=created_by=RUN amd64-only"]) == 2
    assert "platform linux/arm64: " in capsys.readouterr().err
