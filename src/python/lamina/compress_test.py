"""Compressed layers for distribution: deterministic bytes, the source checked, nothing half-written,
and an image whose manifest names the compressed blobs while its config keeps the diff_ids."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest
import zstandard

import lamina.cli  # noqa: F401  (run in a subprocess: this makes it a dependency)

from lamina.compress import (
    DESCRIPTOR_FILE,
    compress_layer,
    compress_missing,
    distributable,
    read_compressed,
    wants_compression,
)
from lamina.errors import InvalidSource, LaminaError
from lamina.model import OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_ND_LAYER
from lamina.sources import open_image
from lamina.validate import validate
from lamina.formats.write import write_oci_layout
from lamina_testing.images import FakeImage, FakeLayer, flip_byte, leftovers, sha, write_docker_classic

PAYLOAD = {"app/data.txt": b"hello lamina " * 20000, "app/bin": bytes(range(256)) * 400}
IMAGE = FakeImage([FakeLayer({"base/x": b"x" * 5000}, "ADD base /"), FakeLayer(PAYLOAD, "COPY app /app")])


def _image(tmp_path):  # type: ignore[no-untyped-def]
    path = str(tmp_path / "img.tar")
    write_docker_classic({"img:latest": IMAGE}, path)
    return open_image("docker-archive:" + path), path


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_a_layer_compresses_to_the_same_bytes_every_time_and_back_to_itself(tmp_path, compression) -> None:  # type: ignore[no-untyped-def]
    image, _ = _image(tmp_path)
    layer = image.layers[1]
    assert wants_compression(layer)
    one = compress_layer(layer, compression, str(tmp_path / "one"))
    two = compress_layer(layer, compression, str(tmp_path / "two"))
    with open(one.path, "rb") as f:
        blob = f.read()
    with open(two.path, "rb") as f:
        assert f.read() == blob
    assert one.descriptor.digest == two.descriptor.digest == sha(blob) and one.descriptor.size == len(blob)
    assert one.diff_id == layer.diff_id
    plain = gzip.decompress(blob) if compression == "gzip" else zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    assert sha(plain) == layer.diff_id
    assert len(blob) < layer.descriptor.size / 10  # compressible content
    assert one.descriptor.media_type == (OCI_LAYER_GZIP if compression == "gzip" else OCI_LAYER_ZSTD)
    if compression == "gzip":  # a fixed header: no name, mtime 0, OS unknown
        assert blob[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    read = read_compressed(str(tmp_path / "one"))
    assert (read.descriptor, read.diff_id, read.path) == (one.descriptor, one.diff_id, one.path)
    assert one.vouched and not read.vouched and read.compressor == one.compressor != ""


def test_the_gzip_form_matches_what_another_process_makes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The same bytes from a fresh interpreter (no state shared with this one): as another machine
    # with the same zlib would make them.
    image, path = _image(tmp_path)
    here = compress_layer(image.layers[1], "gzip", str(tmp_path / "here"))
    out = tmp_path / "there"
    src = tmp_path / "layer.tar"
    with image.layers[1].open_blob() as f:
        src.write_bytes(f.read())
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-c", "import sys; from lamina.cli import main; sys.exit(main())",
                           "compress", str(src), f"--digest={image.layers[1].diff_id}", f"--out={out}"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["descriptor"]["digest"] == here.descriptor.digest
    assert read_compressed(str(out)).descriptor == here.descriptor


def test_a_layer_that_is_not_what_its_digest_says_leaves_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, path = _image(tmp_path)
    image = open_image("docker-archive:" + path)
    # flip a byte inside the second layer's data, as a corrupt archive would hold it
    with open(path, "rb") as f:
        data = f.read()
    flip_byte(path, data.index(b"hello lamina") + 3)
    corrupt = open_image("docker-archive:" + path)
    assert corrupt.layers[1].descriptor == image.layers[1].descriptor
    with pytest.raises(LaminaError, match="expected " + image.layers[1].descriptor.digest):
        compress_layer(corrupt.layers[1], "gzip", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert leftovers(str(tmp_path)) == []


def test_an_unreadable_descriptor_or_a_short_blob_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    image, _ = _image(tmp_path)
    form = compress_layer(image.layers[1], "gzip", str(tmp_path / "c"))
    with open(form.path, "ab") as f:
        f.write(b"x")
    with pytest.raises(InvalidSource, match="descriptor says"):
        read_compressed(str(tmp_path / "c"))
    (tmp_path / "c" / DESCRIPTOR_FILE).write_text("{")
    with pytest.raises(InvalidSource):
        read_compressed(str(tmp_path / "c"))
    with pytest.raises(InvalidSource, match="not a compressed layer"):
        read_compressed(str(tmp_path / "nothing"))


def test_the_distributable_image_names_compressed_blobs_and_keeps_its_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    image, _ = _image(tmp_path)
    forms = compress_missing(image, "gzip", str(tmp_path / "scratch"))
    assert set(forms) == {l.diff_id for l in image.layers}
    pushed = distributable(image, forms)
    assert pushed.config_bytes == image.config_bytes and pushed.diff_ids == image.diff_ids
    manifest = json.loads(pushed.manifest_bytes)
    assert [l["mediaType"] for l in manifest["layers"]] == [OCI_LAYER_GZIP] * 2
    assert [l["digest"] for l in manifest["layers"]] == [forms[d].descriptor.digest for d in image.diff_ids]
    # Written out, every blob checks against its digest, size and diff_id.
    out = str(tmp_path / "oci")
    write_oci_layout(pushed, out)
    assert validate(open_image("oci:" + out)).layers == 2
    # Compressing again reuses what is given, and makes nothing new.
    again = compress_missing(image, "gzip", str(tmp_path / "scratch2"), forms)
    assert again == forms and not (tmp_path / "scratch2").exists()


def test_compressed_and_nondistributable_layers_are_sent_as_they_are(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    image, _ = _image(tmp_path)
    gz = FakeImage([FakeLayer({"a": b"a"}, "ADD a /", "gzip")])
    path = str(tmp_path / "gz")
    from lamina_testing.images import write_oci_dir

    write_oci_dir(gz, path)
    assert not wants_compression(open_image("oci:" + path).layers[0])
    foreign = dataclasses.replace(image.layers[0], descriptor=dataclasses.replace(
        image.layers[0].descriptor, media_type=OCI_ND_LAYER))
    assert not wants_compression(foreign)
    with pytest.raises(LaminaError, match="only uncompressed, distributable"):
        compress_layer(foreign, "gzip", str(tmp_path / "x"))


def test_a_form_read_from_a_directory_is_checked_against_the_diff_id_as_it_is_sent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A compressed.json naming the gzip of other bytes (digest and size right) passes everything
    # but the diff_id: the push must check that while it uploads, as it does for any unvouched layer.
    from lamina.registry.push import _blobs

    image, _ = _image(tmp_path)
    layer = image.layers[1]
    form = compress_layer(image.layers[0], "gzip", str(tmp_path / "other"))  # of the other layer's bytes
    data = json.loads((tmp_path / "other" / DESCRIPTOR_FILE).read_text())
    data["diff_id"] = layer.diff_id
    (tmp_path / "other" / DESCRIPTOR_FILE).write_text(json.dumps(data))
    lie = read_compressed(str(tmp_path / "other"))
    pushed = distributable(image, {layer.diff_id: lie})
    blob = next(b for b in _blobs(pushed, "127.0.0.1:5000") if b.descriptor.digest == form.descriptor.digest)
    assert blob.diff_id == ("gzip", layer.diff_id)
    # written out, the lie is caught too
    with pytest.raises(LaminaError, match="uncompressed content is .*, the config says " + layer.diff_id):
        write_oci_layout(pushed, str(tmp_path / "oci"))
    # forms this process made are vouched for, and keep the layer's own annotations
    made = compress_missing(image, "gzip", str(tmp_path / "made"))
    vouched = distributable(image, made)
    assert [l.verified_by for l in vouched.layers] == ["lamina compress"] * 2
    assert [l.descriptor.annotations for l in vouched.layers] == [l.descriptor.annotations for l in image.layers]
