"""Tests of push: the manifest pushed is the one compose writes, mount candidates, targets, the summary."""
from __future__ import annotations

import pytest

import dataclasses

from lamina.compose import compose
from lamina.image import Image, Layer, Taken
from lamina.model import ANN_SOURCE
from lamina.registry.errors import BadReference
from lamina.registry.push import BlobOutcome, PushResult, _blobs, parse_targets
from lamina.registry.reference import Reference
from lamina.sources import open_image
from lamina_testing.images import FakeImage, FakeLayer, write_oci_dir

FAKE = FakeImage([FakeLayer({"a": b"a" * 100}, "ADD a /"), FakeLayer({"b": b"b" * 100}, "RUN b", "gzip")])


def _source(tmp_path) -> Image:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "src")
    write_oci_dir(FAKE, path)
    return open_image("oci:" + path)


def _take(layer: Layer, source: str, selector: str, platform) -> Layer:  # type: ignore[no-untyped-def]
    return dataclasses.replace(layer, source=source, taken=Taken(selector, "", platform))


def test_the_pushed_manifest_of_an_image_read_back_is_byte_identical_to_the_composed_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    source = _source(tmp_path)
    composed = compose(None, [_take(l, "docker://127.0.0.1:5000/base@sha256:" + "1" * 64, ":", source.platform)
                              for l in source.layers], platform=source.platform)
    from lamina.formats.write import write_oci_layout

    out = str(tmp_path / "out")
    write_oci_layout(composed, out)
    assert open_image("oci:" + out).manifest_bytes == composed.manifest_bytes


def test_mount_candidates_come_from_layer_sources_on_the_same_registry(tmp_path) -> None:  # type: ignore[no-untyped-def]
    source = _source(tmp_path)
    added = [_take(source.layers[0], "docker://127.0.0.1:5000/team/base@sha256:" + "1" * 64, "0", source.platform),
             _take(source.layers[1], "docker://other.example/x/y:1", "1", source.platform)]
    composed = compose(None, added, platform=source.platform)
    out = str(tmp_path / "out")
    from lamina.formats.write import write_oci_layout

    write_oci_layout(composed, out)
    image = open_image("oci:" + out)
    assert dict(image.layers[0].descriptor.annotations)[ANN_SOURCE].startswith("docker://127.0.0.1:5000/team/base")
    blobs = _blobs(image, "127.0.0.1:5000")
    assert [b.mount_from for b in blobs] == [("team/base",), (), ()]  # layer 0, layer 1, config
    assert all(b.opener is not None for b in blobs)
    assert [b.mount_from for b in _blobs(image, "other.example")] == [(), ("x/y",), ()]
    # The composed image itself, never written, offers the same: its layers know their sources.
    assert [b.mount_from for b in _blobs(composed, "127.0.0.1:5000")] == [("team/base",), (), ()]


def test_a_registry_source_offers_its_own_repository_for_every_blob(tmp_path) -> None:  # type: ignore[no-untyped-def]
    source = _source(tmp_path)
    image = Image("docker://127.0.0.1:5000/a/b@sha256:" + "2" * 64, source.config_bytes, source.config_descriptor,
                  source.layers)
    assert [b.mount_from for b in _blobs(image, "127.0.0.1:5000")] == [("a/b",)] * 3


@pytest.mark.parametrize("text, message", [
    ("127.0.0.1:5000/app", "name the tag to push"),
    ("127.0.0.1:5000/app@sha256:" + "a" * 64, "push to a tag"),
    ("127.0.0.1:5000/App:1", "is not valid"),
], ids=["no-tag", "digest", "bad-repo"])
def test_bad_targets(text: str, message: str) -> None:
    with pytest.raises(BadReference, match=message):
        parse_targets([text])


def test_summary_line() -> None:
    result = PushResult(Reference("127.0.0.1:5000", "app", "1"), "sha256:" + "f" * 64, (
        BlobOutcome("sha256:a", 100, "uploaded"), BlobOutcome("sha256:b", 30, "mounted", "base"),
        BlobOutcome("sha256:c", 7, "present")))
    assert result.summary() == ("pushed 127.0.0.1:5000/app:1 sha256:" + "f" * 64
                                + " \u2014 layers 1 uploaded (100 bytes), 1 mounted (30 bytes), 1 already there "
                                "(7 bytes); blobs in all: uploaded 100 bytes, skipped 37 bytes (1 mounted)")


def test_a_nondistributable_layer_is_named_but_never_sent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from lamina.model import OCI_ND_LAYER_GZIP

    source = _source(tmp_path)
    foreign = dataclasses.replace(source.layers[1], descriptor=dataclasses.replace(
        source.layers[1].descriptor, media_type=OCI_ND_LAYER_GZIP, urls=("https://example.com/layer",)), opener=None, path=None)
    image = dataclasses.replace(source, layers=(source.layers[0], foreign))
    digests = [b.descriptor.digest for b in _blobs(image, "127.0.0.1:5000")]
    assert foreign.descriptor.digest not in digests and source.layers[0].descriptor.digest in digests
    assert OCI_ND_LAYER_GZIP in image.manifest_bytes.decode()


def test_referrers_are_attached_to_the_manifest_by_digest_before_any_tag(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from lamina.model import OCI_MANIFEST
    from lamina.registry.client import RegistryClient
    from lamina.registry.push import push
    from lamina.registry.referrers import CYCLONEDX_JSON, Artifact
    from lamina.registry.referrers_test import HOST, _Registry
    from lamina.registry.transport import RegistryOptions

    image = _source(tmp_path)
    registry = _Registry(referrers_api=False)
    clients = {HOST: RegistryClient(HOST, RegistryOptions(), registry)}  # type: ignore[arg-type]
    sbom = Artifact(CYCLONEDX_JSON, b"{}\n", "app.cdx.json")
    targets = parse_targets([f"{HOST}/team/app:1", f"{HOST}/team/app:latest"])
    results = push(image, targets, RegistryOptions(), clients, referrers=(sbom,))
    manifest = image.manifest_descriptor.digest
    assert registry.tags["1"] == registry.tags["latest"] == manifest
    assert [len(r.attached) for r in results] == [1, 0]  # once per repository
    attached = results[0].attached[0]
    assert attached.subject == manifest and attached.listed_by == "referrers tag " + manifest.replace(":", "-")
    puts = [p.rsplit("/", 1)[-1] for m, p in registry.requests if m == "PUT" and "/manifests/" in p]
    # the image by digest, the artifact by digest, the referrers tag, then the image's tags
    assert puts == [manifest, attached.digest, manifest.replace(":", "-"), "1", "latest"]
    assert registry.manifests[attached.digest][0] == OCI_MANIFEST
    assert "attached SBOM app.cdx.json to registry.test/team/app@" + manifest in attached.summary(HOST)
