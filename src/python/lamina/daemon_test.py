"""Tests of incremental loads into the Docker engine: chain IDs, the plan of what to send, the sparse tarball."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile

from lamina.daemon import LoadPlan, chain_ids, load_tarball, plan_load
from lamina.sources import open_image
from lamina_testing.images import FakeImage, FakeLayer, sha, write_oci_dir

FAKE = FakeImage([FakeLayer({"a": b"a"}, "ADD a /"), FakeLayer({"b": b"b" * 900}, "RUN b", "gzip"),
                  FakeLayer({"c": b"c"}, "RUN c")])


def test_chain_ids_follow_the_layer_store_rule() -> None:
    d1, d2, d3 = ("sha256:" + c * 64 for c in "123")
    c2 = "sha256:" + hashlib.sha256(f"{d1} {d2}".encode()).hexdigest()
    c3 = "sha256:" + hashlib.sha256(f"{c2} {d3}".encode()).hexdigest()
    assert chain_ids([d1, d2, d3]) == [d1, c2, c3]
    assert chain_ids([]) == []


def test_plan_skips_layers_whose_chain_the_engine_has(tmp_path) -> None:  # type: ignore[no-untyped-def]
    write_oci_dir(FAKE, str(tmp_path / "img"))
    image = open_image("oci:" + str(tmp_path / "img"))
    chains = chain_ids(image.diff_ids)
    assert plan_load(image, frozenset(chains[:2])) == LoadPlan(send=(2,), skip=(0, 1))
    assert plan_load(image, frozenset()) == LoadPlan(send=(0, 1, 2), skip=())
    # the same diff_id on other parents is a different chain: not skipped
    assert plan_load(image, frozenset([image.diff_ids[1]])) == LoadPlan(send=(0, 1, 2), skip=())


def test_sparse_tarball_lists_every_layer_and_holds_only_the_sent_ones(tmp_path) -> None:  # type: ignore[no-untyped-def]
    write_oci_dir(FAKE, str(tmp_path / "img"))
    image = open_image("oci:" + str(tmp_path / "img"))
    data = b"".join(load_tarball(image, ("app:1",), LoadPlan(send=(1,), skip=(0, 2))))
    assert len(data) % 512 == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}  # type: ignore[union-attr]
    config_name = image.config_descriptor.hex + ".json"
    assert sorted(members) == sorted(["manifest.json", config_name, "blobs/sha256/" + sha(FAKE.layers[1].blob)[7:]])
    assert json.loads(members["manifest.json"]) == [{
        "Config": config_name, "RepoTags": ["app:1"],
        "Layers": ["blobs/sha256/" + sha(l.blob)[7:] for l in FAKE.layers]}]
    assert members[config_name] == image.config_bytes
    assert members["blobs/sha256/" + sha(FAKE.layers[1].blob)[7:]] == FAKE.layers[1].blob


def test_a_layer_past_the_ustar_limit_is_sent_with_a_gnu_size(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import lamina.formats.write as writer
    from lamina.daemon import _header

    header = _header("blobs/sha256/" + "b" * 64, 9 << 30)  # was a ValueError: ustar holds 8 GiB - 1
    assert tarfile.TarInfo.frombuf(header, tarfile.ENCODING, "surrogateescape").size == 9 << 30
    monkeypatch.setattr(writer, "USTAR_MAX_SIZE", 100)
    write_oci_dir(FAKE, str(tmp_path / "img"))
    image = open_image("oci:" + str(tmp_path / "img"))
    data = b"".join(load_tarball(image, ("app:1",), LoadPlan(send=(0, 1, 2), skip=())))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}  # type: ignore[union-attr]
    assert members["blobs/sha256/" + sha(FAKE.layers[1].blob)[7:]] == FAKE.layers[1].blob
