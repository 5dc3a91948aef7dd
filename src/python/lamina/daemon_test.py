"""Tests of incremental loads into the Docker engine: chain IDs, the plan of what to send, the sparse tarball."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile

import pytest

from lamina.daemon import LoadPlan, chain_ids, load_tarball, plan_load
from lamina.sources import open_image
from lamina_testing.images import FakeImage, FakeLayer, sha, tree, write_oci_dir

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


class _SavingEngine:
    """An engine API that holds one image: its inspect answer and its `docker save` bytes."""

    def __init__(self, saved: bytes, image_id: str, diff_ids: list) -> None:  # type: ignore[type-arg]
        self.saved, self.image_id, self.diff_ids = saved, image_id, diff_ids

    def inspect_image(self, name: str) -> dict:
        return {"Id": self.image_id, "RepoTags": ["app:1"], "RootFS": {"Layers": self.diff_ids}}

    def get_image(self, name: str, chunk_size: int):  # type: ignore[no-untyped-def]
        for i in range(0, len(self.saved), 7000):
            yield self.saved[i:i + 7000]


FILES = FakeImage([
    FakeLayer({"bin/sh": b"sh" * 5000, "etc/ld.so.conf": b"include /etc/ld.so.conf.d/*.conf\n"}, "ADD base /"),
    FakeLayer({"app/run": b"#!/bin/sh\necho run\n", "app/data": b"d" * 300_000}, "COPY app /app"),
])


@pytest.mark.parametrize("fmt", ["docker", "docker25"])
def test_an_engine_export_indexes_the_layers_asked_for_as_they_stream_and_extract_reads_none_again(
        tmp_path, monkeypatch, fmt: str) -> None:  # type: ignore[no-untyped-def]
    import lamina.analyze.scan as scan
    from lamina.daemon import Engine, export_unpacked
    from lamina.extract import INDEX_FILE, extract
    from lamina.select import parse_selector, select

    from lamina_testing.images import write_docker_classic, write_docker_oci

    archive = str(tmp_path / "saved.tar")
    if fmt == "docker":
        write_docker_classic({"app:1": FILES}, archive)
    else:  # Docker 25+ saves an OCI layout (blobs/sha256/...) with a manifest.json
        write_docker_oci(FILES, "app:1", archive)
    plain = open_image("docker-archive:" + archive, name="app")
    expected = str(tmp_path / "expected")
    extract(plain, select(plain, parse_selector("-1")), expected, "-1", index=True)

    engine = Engine(_SavingEngine(open(archive, "rb").read(), plain.config_descriptor.digest, list(plain.diff_ids)), "stub")
    scanned: list = []
    real_scan = scan.scan_content
    monkeypatch.setattr(scan, "scan_content", lambda *a, **k: scanned.append(a[1]) or real_scan(*a, **k))
    exported = export_unpacked(engine, "app:1", str(tmp_path / "unpacked"), parse_selector("-1"))
    assert set(exported.contents) == {plain.diff_ids[-1]}  # only the layer asked for is kept;
    # Docker's own format says which layer a file is only by its hash: both were indexed
    assert len(scanned) == (2 if fmt == "docker" else 1), scanned
    monkeypatch.setattr(scan, "scan_layer", lambda *a, **k: pytest.fail("the layer was read again to index it"))
    image = open_image("docker-archive:" + exported.path, name="app")
    got = str(tmp_path / "got")
    extract(image, select(image, parse_selector("-1")), got, "-1", index=True, contents=exported.contents)
    assert open(os.path.join(got, INDEX_FILE), "rb").read() == open(os.path.join(expected, INDEX_FILE), "rb").read()
    assert {p: d for p, d in tree(got).items()} == tree(expected)  # the bundle, byte for byte


def test_a_streamed_index_is_used_only_for_the_file_it_was_made_of(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from lamina.daemon import Engine, Streamed, export_unpacked, wanted_diff_ids
    from lamina.extract import INDEX_FILE, extract
    from lamina.select import parse_selector, select

    from lamina_testing.images import write_docker_classic

    archive = str(tmp_path / "saved.tar")
    write_docker_classic({"app:1": FILES}, archive)
    plain = open_image("docker-archive:" + archive, name="app")
    engine = Engine(_SavingEngine(open(archive, "rb").read(), plain.config_descriptor.digest, list(plain.diff_ids)), "stub")
    exported = export_unpacked(engine, "app:1", str(tmp_path / "unpacked"), parse_selector("-1"))
    # an index said to be of another file (a manifest pointing the diff_id elsewhere): not used, the
    # layer is read and verified as any other
    from lamina.analyze.scan import scan_content

    (diff_id,) = exported.contents
    with plain.layers[0].open_uncompressed() as base:
        other = scan_content(base, "the base")  # what another file holds: wrong for this layer
    image = open_image("docker-archive:" + exported.path, name="app")
    copy = str(tmp_path / "copy.tar")  # the same size and bytes, another file
    shutil.copyfile(image.layers[-1].path, copy)
    st = os.stat(copy)
    elsewhere = {diff_id: Streamed(copy, (st.st_dev, st.st_ino, st.st_size), other)}
    got = str(tmp_path / "got")
    extract(image, select(image, parse_selector("-1")), got, "-1", index=True, contents=elsewhere)
    expected = str(tmp_path / "expected")
    extract(plain, select(plain, parse_selector("-1")), expected, "-1", index=True)
    assert open(os.path.join(got, INDEX_FILE), "rb").read() == open(os.path.join(expected, INDEX_FILE), "rb").read()
    ids = ["sha256:" + c * 64 for c in "abc"]
    assert wanted_diff_ids(parse_selector("-1"), ids) == {ids[2]}
    assert wanted_diff_ids(parse_selector("1:"), ids) == {ids[1], ids[2]}
    assert wanted_diff_ids(parse_selector("sha256:b"), ids) == {ids[1]}
    assert wanted_diff_ids(parse_selector("7"), ids) == set()  # out of range: select says so later
    assert wanted_diff_ids(parse_selector("path=/app/run"), ids) == set()  # needs the layers' files


def test_an_export_that_holds_a_member_twice_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # the second copy would replace the bytes the first was hashed and indexed as
    from lamina.daemon import DaemonError, Engine, export_unpacked
    from lamina.select import parse_selector

    from lamina_testing.images import write_docker_classic

    archive = str(tmp_path / "saved.tar")
    write_docker_classic({"app:1": FILES}, archive)
    plain = open_image("docker-archive:" + archive, name="app")
    with tarfile.open(archive) as tf:
        members = [(m, tf.extractfile(m).read() if m.isreg() else None) for m in tf.getmembers()]  # type: ignore[union-attr]
    top = [m for m, _ in members if m.name.endswith("/layer.tar")][-1]
    twice = str(tmp_path / "twice.tar")
    with tarfile.open(twice, "w") as tf:
        for m, data in members:
            tf.addfile(m, io.BytesIO(data) if data is not None else None)
            if m.name == top.name:  # the same name again, the same size, other bytes
                tf.addfile(m, io.BytesIO(b"\0" * m.size))
    engine = Engine(_SavingEngine(open(twice, "rb").read(), plain.config_descriptor.digest, list(plain.diff_ids)), "stub")
    with pytest.raises(DaemonError, match=r"holds '.*/layer.tar' twice"):
        export_unpacked(engine, "app:1", str(tmp_path / "unpacked"), parse_selector("-1"))
