"""Tests of reading OCI layouts (directory and archive): picking by ref name and platform, malformed files."""
from __future__ import annotations

import json
import os

import pytest

from lamina.errors import DigestMismatch, InvalidSource
from lamina.formats import oci_layout
from lamina.formats.oci_layout import layout_files
from lamina.model import ANN_REF_NAME, OCI_INDEX, OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST, Descriptor, Platform
from lamina.sources import open_image
from lamina.validate import validate
from lamina_testing.images import (
    FakeImage,
    FakeLayer,
    blob_file,
    oci_manifest,
    rewrite_oci,
    sha,
    write_oci_archive,
    write_oci_dir,
    write_oci_multi,
)


def _image(arch: str = "amd64", variant: str = "") -> FakeImage:
    return FakeImage(
        [
            FakeLayer({"etc/os-release": b"ID=fake\n"}, "ADD rootfs /", "none"),
            FakeLayer({"lib/" + arch: arch.encode()}, "RUN build " + arch, "gzip"),
            FakeLayer({"opt/z": b"z" * 100}, "COPY z /opt", "zstd"),
        ],
        architecture=arch,
        variant=variant,
    )


@pytest.mark.parametrize("kind", ["oci", "oci-archive"])
def test_reads_layout_directory_and_archive(tmp_path, kind: str) -> None:  # type: ignore[no-untyped-def]
    fake = _image()
    path = str(tmp_path / "img")
    (write_oci_dir if kind == "oci" else write_oci_archive)(fake, path, "app:1")
    image = open_image(f"{kind}:{path}")
    assert image.tags == ("app:1",)
    assert image.manifest_media_type == OCI_MANIFEST
    assert image.config_bytes == fake.config_bytes()
    assert image.diff_ids == tuple(sha(l.tar) for l in fake.layers)
    assert [(l.descriptor.digest, l.descriptor.media_type) for l in image.layers] == [
        (sha(l.blob), t) for l, t in zip(fake.layers, [OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD])
    ]
    assert [l.created_by for l in image.layers] == ["ADD rootfs /", "RUN build amd64", "COPY z /opt"]
    # a directory's layers can be linked; an archive's only opened
    assert all((l.path is not None) == (kind == "oci") for l in image.layers)
    assert validate(image).layers == 3


def test_picks_image_by_ref_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "multi")
    write_oci_multi(path, [(_image("amd64"), "app:amd"), (_image("arm64"), "app:arm")])
    assert open_image(f"oci:{path}:app:arm").platform.architecture == "arm64"
    assert open_image(f"oci:{path}:app:amd").tags == ("app:amd",)
    with pytest.raises(InvalidSource, match=r"no image tagged 'app:x'; it has app:amd, app:arm"):
        open_image(f"oci:{path}:app:x")


def test_several_images_without_a_choice_is_an_error_listing_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "multi")
    write_oci_multi(path, [(_image("amd64"), "app:amd"), (_image("arm64"), "app:arm")])
    with pytest.raises(InvalidSource, match=r"holds 2 images; name one \(tags: app:amd, app:arm\)"):
        open_image("oci:" + path)
    untagged = str(tmp_path / "untagged")
    write_oci_multi(untagged, [(_image("amd64"), None), (_image("arm64"), None)])
    with pytest.raises(InvalidSource, match=r"holds 2 images; name one \(platforms: linux/amd64, linux/arm64\)"):
        open_image("oci:" + untagged)


@pytest.mark.parametrize("nested", [False, True], ids=["flat-index", "nested-index"])
@pytest.mark.parametrize(
    "wanted, arch", [("linux/arm64", "arm64"), ("linux/arm64/v8", "arm64"), ("linux/amd64", "amd64")],
    ids=["arm64", "arm64-v8", "amd64"],
)
def test_picks_image_by_platform(tmp_path, nested: bool, wanted: str, arch: str) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "multi")
    write_oci_multi(path, [(_image("amd64"), None), (_image("arm64", "v8"), None)], nested=nested)
    image = open_image("oci:" + path, platform=Platform.parse(wanted))
    assert image.platform.architecture == arch
    assert image.layers[1].created_by == "RUN build " + arch


def test_nested_index_without_platform_uses_the_host(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "multi")
    write_oci_multi(path, [(_image("amd64"), None), (_image("arm64"), None)], nested=True, archive=True)
    monkeypatch.setattr(Platform, "host", classmethod(lambda cls: Platform("linux", "arm64")))
    assert open_image("oci-archive:" + path).platform.architecture == "arm64"
    monkeypatch.setattr(Platform, "host", classmethod(lambda cls: Platform("linux", "riscv64")))
    with pytest.raises(InvalidSource, match=r"no image for platform linux/riscv64 \(it has linux/amd64, linux/arm64\)"):
        open_image("oci-archive:" + path)


def test_nested_index_skips_attestation_manifests(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "multi")
    write_oci_multi(path, [(_image("amd64"), None), (_image("unknown"), None)], nested=True)
    monkeypatch.setattr(Platform, "host", classmethod(lambda cls: Platform("linux", "riscv64")))  # no guessing: one real image is left
    image = open_image("oci:" + path, platform=None)
    assert image.platform.architecture == "amd64"


def _oci(tmp_path) -> str:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "oci")
    write_oci_dir(_image(), path)
    return path


def _edit_json(path: str, fn) -> None:  # type: ignore[no-untyped-def]
    with open(path) as f:
        value = json.load(f)
    fn(value)
    with open(path, "w") as f:
        json.dump(value, f)


def test_layout_version_and_files_are_checked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _oci(tmp_path)
    _edit_json(os.path.join(path, "oci-layout"), lambda v: v.update(imageLayoutVersion="2.0.0"))
    with pytest.raises(InvalidSource, match="unsupported imageLayoutVersion '2.0.0'"):
        open_image("oci:" + path)
    os.unlink(os.path.join(path, "oci-layout"))
    with pytest.raises(InvalidSource, match=r"not an OCI layout \(no oci-layout file\)"):
        open_image("oci:" + path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda v: v.update(manifests={}), "index.json has no manifests list"),
        (lambda v: v["manifests"][0].update(mediaType="application/x-nope"), "unknown manifest media type 'application/x-nope'"),
        (lambda v: v.update(manifests=[]), "holds no image"),
        (lambda v: v["manifests"][0].update(size=1), r"manifest sha256:[0-9a-f]+: blob is larger than its declared size 1"),
    ],
    ids=["no-manifests", "unknown-manifest-type", "empty", "manifest-size-lie"],
)
def test_malformed_index(tmp_path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    path = _oci(tmp_path)
    _edit_json(os.path.join(path, "index.json"), edit)
    with pytest.raises((InvalidSource, DigestMismatch), match=message):
        open_image("oci:" + path)


@pytest.mark.parametrize(
    "manifest, config, message",
    [
        (lambda m: m.pop("layers"), None, "manifest has no layers list"),
        (lambda m: m["layers"].pop(), None, "manifest lists 2 layers but the config has 3 diff_ids"),
        (lambda m: m["layers"][0].update(digest="sha256:1234"), None, r"manifest layer 0: 'sha256:1234' is not a sha256 digest"),
        (None, lambda c: c.pop("rootfs"), "config has no rootfs.diff_ids"),
        (None, lambda c: [], r"config: expected a JSON object, found list"),
        (lambda m: m["config"].update(digest=sha(b"gone")), None, "config " + sha(b"gone") + " is missing from the archive"),
    ],
    ids=["no-layers", "layer-count", "bad-layer-digest", "no-rootfs", "config-not-object", "config-missing"],
)
def test_malformed_manifest_or_config(tmp_path, manifest, config, message: str) -> None:  # type: ignore[no-untyped-def]
    path = _oci(tmp_path)
    rewrite_oci(path, manifest=manifest, config=config)
    with pytest.raises(InvalidSource, match=message):
        open_image("oci:" + path)


def test_missing_layer_blob_has_no_opener_until_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _oci(tmp_path)
    os.unlink(blob_file(path, oci_manifest(path)["layers"][2]["digest"]))
    image = open_image("oci:" + path)
    assert image.layers[2].opener is None and image.layers[0].opener is not None
    with pytest.raises(InvalidSource, match=f"layer {image.layers[2].descriptor.digest} has no bytes in this source"):
        image.layers[2].open_blob()


def test_layout_files_tag_each_entry() -> None:
    desc = Descriptor(OCI_MANIFEST, sha(b"m"), 1)
    files = layout_files(desc, ("a:1", "b:2"))
    index = json.loads(files["index.json"])
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    assert index["mediaType"] == OCI_INDEX
    assert [e["annotations"][ANN_REF_NAME] for e in index["manifests"]] == ["a:1", "b:2"]
    assert {e["digest"] for e in index["manifests"]} == {sha(b"m")}
    assert "annotations" not in json.loads(layout_files(desc, ())["index.json"])["manifests"][0]


ARM_FAMILY = (("arm", "v6"), ("arm", "v7"), ("arm64", "v8"))


@pytest.mark.parametrize("wanted, picked", [
    ("linux/arm", ("arm", "v7")), ("linux/arm/v6", ("arm", "v6")), ("linux/arm64", ("arm64", "v8")),
    ("linux/arm64/v8", ("arm64", "v8")),
], ids=["arm-default-v7", "arm-v6", "arm64", "arm64-v8"])
@pytest.mark.parametrize("nested", [False, True], ids=["top-level", "nested"])
def test_a_layout_picks_a_platform_by_the_registrys_rule(tmp_path, wanted: str, picked: tuple, nested: bool) -> None:  # type: ignore[no-untyped-def]
    from lamina.registry.source import pick_platform

    path = str(tmp_path / "layout")
    write_oci_multi(path, [(_image(arch, variant), None) for arch, variant in ARM_FAMILY], nested=nested)
    image = open_image("oci:" + path, platform=Platform.parse(wanted))  # was: "holds 3 images; name one"
    assert (image.platform.architecture, image.platform.variant) == picked
    # the registry picks the same entry of the same index
    index = {"manifests": [{"mediaType": OCI_MANIFEST, "digest": "sha256:" + f"{i}" * 64, "size": 1,
                            "platform": {"os": "linux", "architecture": a, "variant": v}}
                           for i, (a, v) in enumerate(ARM_FAMILY)]}
    chosen = pick_platform(index, Platform.parse(wanted), "registry")
    assert ARM_FAMILY[int(chosen.digest[-1])] == picked


@pytest.mark.parametrize("annotations", [[1], 5], ids=["list", "int"])
def test_index_annotations_that_are_not_an_object_are_invalid_source(tmp_path, annotations) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "oci")  # found by lamina_fuzz: AttributeError
    write_oci_dir(_image(), path, tag="1")
    index = json.load(open(os.path.join(path, "index.json")))
    index["manifests"][0]["annotations"] = annotations
    json.dump(index, open(os.path.join(path, "index.json"), "w"))
    with pytest.raises(InvalidSource, match="index.json: expected a JSON object"):
        open_image("oci:" + path)


@pytest.mark.parametrize("platform", ["x", 7], ids=["string", "int"])
def test_a_nested_index_entry_whose_platform_is_not_an_object_is_skipped(tmp_path, platform) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "oci")  # found by lamina_fuzz: AttributeError
    write_oci_multi(path, [(_image("amd64"), None), (_image("arm64"), None)], nested=True)
    index_entry = json.load(open(os.path.join(path, "index.json")))["manifests"][0]
    nested_path = blob_file(path, index_entry["digest"])
    nested = json.load(open(nested_path))
    nested["manifests"][1]["platform"] = platform
    data = json.dumps(nested).encode()
    with open(blob_file(path, sha(data)), "wb") as f:
        f.write(data)
    index_entry.update(digest=sha(data), size=len(data))
    json.dump({"schemaVersion": 2, "manifests": [index_entry]}, open(os.path.join(path, "index.json"), "w"))
    assert str(open_image("oci:" + path, platform=Platform.parse("linux/amd64")).platform) == "linux/amd64"


def test_a_ref_name_with_a_newline_is_shown_escaped_in_a_one_line_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "oci")  # found by lamina_fuzz: the message had two lines
    write_oci_dir(_image(), path, tag="x\ny")
    with pytest.raises(InvalidSource, match=r"it has 'x\\ny'$"):
        open_image(f"oci:{path}:zzz")


def test_registry_platforms_with_a_newline_are_shown_escaped() -> None:
    from lamina.registry.source import pick_platform  # found by lamina_fuzz: the message had two lines

    entry = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 1,
             "platform": {"os": "x\ny", "architecture": "arm64"}}
    with pytest.raises(InvalidSource) as e:
        pick_platform({"manifests": [entry, dict(entry, digest="sha256:" + "b" * 64)]}, Platform.parse("linux/amd64"), "r")
    assert len(str(e.value).splitlines()) == 1 and "'x\\ny/arm64'" in str(e.value)


def test_index_entries_whose_digest_is_not_a_string_are_invalid_source(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from lamina.registry.source import pick_platform  # found by lamina_fuzz: TypeError (unhashable)

    path = str(tmp_path / "oci")
    write_oci_multi(path, [(_image("amd64"), "1"), (_image("arm64"), "1")])
    index = json.load(open(os.path.join(path, "index.json")))
    for entry in index["manifests"]:
        entry["digest"] = {"not": "a digest"}
    json.dump(index, open(os.path.join(path, "index.json"), "w"))
    with pytest.raises(InvalidSource, match="is not a sha256 digest"):
        open_image(f"oci:{path}:1")
    entry = {"mediaType": OCI_MANIFEST, "digest": [1], "size": 1, "platform": {"os": "linux", "architecture": "amd64"}}
    with pytest.raises(InvalidSource, match="is not a sha256 digest"):
        pick_platform({"manifests": [entry, dict(entry)]}, Platform.parse("linux/amd64"), "r")
