"""Tests of the validator: a valid image's report, a wrong diff_id and a missing layer blob."""
from __future__ import annotations

import os

import pytest

from lamina.errors import DigestMismatch, InvalidSource
from lamina.sources import open_image
from lamina.validate import validate
from lamina_testing.images import FakeImage, FakeLayer, blob_file, oci_manifest, rewrite_oci, sha, write_oci_dir

FAKE = FakeImage([FakeLayer({"a": b"a" * 999}, "ADD a", "none"), FakeLayer({"b": b"b"}, "RUN b", "gzip"),
                  FakeLayer({"c": b"c"}, "RUN c", "zstd")])


def test_valid_image_reports_layers_and_bytes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    write_oci_dir(FAKE, str(tmp_path / "i"))
    report = validate(open_image(str(tmp_path / "i")))
    assert (report.layers, report.bytes) == (3, sum(len(l.blob) for l in FAKE.layers))


@pytest.mark.parametrize("i", [0, 1, 2], ids=["none", "gzip", "zstd"])
def test_wrong_diff_id_is_found(tmp_path, i: int) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "i")
    write_oci_dir(FAKE, path)

    def edit(c: dict) -> None:
        c["rootfs"]["diff_ids"][i] = sha(b"wrong")

    rewrite_oci(path, config=edit)
    with pytest.raises(DigestMismatch) as e:
        validate(open_image(path))
    assert f"layer {i} (" in str(e.value)
    assert f"uncompressed content is {sha(FAKE.layers[i].tar)}, the config says {sha(b'wrong')}" in str(e.value)


def test_missing_layer_blob_is_reported(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "i")
    write_oci_dir(FAKE, path)
    digest = oci_manifest(path)["layers"][1]["digest"]
    os.unlink(blob_file(path, digest))
    with pytest.raises(InvalidSource, match=f"layer {digest} has no bytes in this source"):
        validate(open_image(path))
