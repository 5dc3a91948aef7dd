"""Tests of scanning layers into indexes: entries, hashes, whiteouts, loader texts, the JSON round trip."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from lamina.analyze.index import FORMAT, IndexEntry, dumps, loads, read_index, write_index
from lamina.analyze.scan import scan_image, scan_layer, scan_source
from lamina.elf import ElfInfo
from lamina.errors import DigestMismatch, InvalidIndex
from lamina.extract import extract
from lamina.image import Layer
from lamina.model import Descriptor
from lamina.select import parse_selector, select
from lamina.sources import open_image
from lamina_testing.elffiles import make_elf
from lamina_testing.images import (MEDIA, FakeImage, FakeLayer, blob_file, flip_byte, oci_manifest, sha,
                                   write_oci_dir)
from lamina_testing.stacks import indexes

LIB = make_elf(needed=["libc.so.6"], soname="libfoo.so.1")
FILES = {
    "./": None,
    "etc/": None,
    "etc/ld.so.conf": b"include /etc/ld.so.conf.d/*.conf\n",
    "etc/ld.so.conf.d/": None,
    "etc/ld.so.conf.d/app.conf": b"/opt/app/lib\n",
    "etc/other.conf": b"not captured\n",
    "usr/lib/": None,
    "usr/lib/libfoo.so.1": LIB,
    "usr/lib/libfoo.so": "->libfoo.so.1",
    "usr/lib/hard": "=>./usr/lib/libfoo.so.1",
    "usr/.wh.gone": b"",
    "opt/": None,
    "opt/.wh..wh..opq": b"",
}
IMAGE = FakeImage([
    FakeLayer({"bin/": None, "bin/sh": b"shell"}, "ADD rootfs /"),
    FakeLayer(FILES, "RUN install", "gzip"),
    FakeLayer({"srv/": None, "srv/x": b"x"}, "COPY x /srv/", "zstd"),
])


def _entries(layer_files: dict) -> dict[str, IndexEntry]:
    (index,) = indexes(FakeImage([FakeLayer(layer_files)]), "src")
    return {e.path: e for e in index.entries}


def test_entries_carry_kind_mode_owner_size_hash_and_links() -> None:
    entries = _entries(FILES)
    assert "" not in entries  # the root directory itself is not an entry
    lib = entries["usr/lib/libfoo.so.1"]
    assert (lib.kind, lib.mode, lib.uid, lib.gid, lib.size) == ("file", 0o755, 0, 0, len(LIB))
    assert lib.sha256 == hashlib.sha256(LIB).hexdigest()
    assert lib.elf == ElfInfo(64, "little", "dyn", 62, needed=("libc.so.6",), soname="libfoo.so.1")
    assert entries["usr/lib/libfoo.so"].kind == "symlink" and entries["usr/lib/libfoo.so"].linkname == "libfoo.so.1"
    hard = entries["usr/lib/hard"]
    assert (hard.kind, hard.linkname, hard.sha256) == ("hardlink", "usr/lib/libfoo.so.1", "")
    assert entries["etc"].kind == "dir" and entries["etc/other.conf"].elf is None


def test_mode_is_the_permission_bits_even_when_the_tar_carries_the_file_type() -> None:
    tar = bytearray(FakeLayer({"x": b"x"}).tar)
    tar[100:108] = b"0100644\0"  # as Go's archive/tar (docker) writes a regular file's mode
    tar[148:156] = b"        "
    tar[148:156] = b"%06o\0 " % sum(tar[:512])
    layer = Layer(Descriptor(MEDIA["none"], sha(bytes(tar)), len(tar)), sha(bytes(tar)), 0, (),
                  opener=lambda: io.BytesIO(bytes(tar)))
    (entry,) = scan_layer(layer, "s", (), "linux/amd64").entries
    assert entry.mode == 0o644


def test_whiteout_and_opaque_markers_are_marked_in_the_json() -> None:
    entries = _entries(FILES)
    assert entries["usr/.wh.gone"].to_json()["whiteout"] == "usr/gone"
    assert entries["opt/.wh..wh..opq"].to_json()["opaque"] is True
    assert "whiteout" not in entries["usr/lib/libfoo.so.1"].to_json()


def test_loader_config_text_is_captured_and_nothing_else() -> None:
    (index,) = indexes(FakeImage([FakeLayer(FILES)]), "src")
    assert dict(index.texts) == {"etc/ld.so.conf": "include /etc/ld.so.conf.d/*.conf\n",
                                 "etc/ld.so.conf.d/app.conf": "/opt/app/lib\n"}


def test_the_hash_bang_line_of_a_script_is_recorded_bounded() -> None:
    long = b"#!/usr/bin/env " + b"x" * 400 + b"\n"
    entries = _entries({"a": b"#!/bin/sh -e\r\necho\n", "b": b"#!", "c": long, "d": b"no script\n", "e": LIB,
                        "f": b"#"})
    assert entries["a"].shebang == "#!/bin/sh -e\r"  # the line as the kernel reads it, '\r' and all
    assert entries["b"].shebang == "#!"
    assert entries["c"].shebang == long[:256].decode() and len(entries["c"].shebang) == 256
    assert entries["d"].shebang == entries["e"].shebang == entries["f"].shebang == ""
    (index,) = indexes(FakeImage([FakeLayer({"a": b"#!/bin/sh\n"})]), "src")
    doc = json.loads(dumps([index]))["layers"][0]
    assert doc["entries"][0]["shebang"] == "#!/bin/sh" and doc["shebangs"] is True
    assert loads(dumps([index]), "x") == (index,)


def test_an_index_made_before_hash_bang_lines_were_recorded_is_read() -> None:
    doc = json.loads(dumps(indexes(FakeImage([FakeLayer({"a": b"#!/bin/sh\n"})]), "src")))
    layer = doc["layers"][0]
    del layer["shebangs"]
    for entry in layer["entries"]:
        entry.pop("shebang", None)
    (old,) = loads(json.dumps(doc).encode(), "old.json")
    assert old.shebangs is False and old.entries[0].shebang == ""


def test_layer_identity_and_the_layers_below_it_are_recorded() -> None:
    stack = indexes(IMAGE, "img")
    assert [i.index for i in stack] == [0, 1, 2]
    top = stack[2]
    assert top.below == (stack[0].digest, stack[1].digest)
    assert top.below_diff_ids == (stack[0].diff_id, stack[1].diff_id)
    assert top.diff_id == sha(IMAGE.layers[2].tar) and top.digest == sha(IMAGE.layers[2].blob)
    assert top.created_by == "COPY x /srv/" and top.platform == "linux/amd64"
    assert top.knows(stack[0]) and not stack[0].knows(top)


def test_compression_does_not_change_the_entries() -> None:
    plain = FakeImage([FakeLayer(FILES, compression="none")])
    for compression in ("gzip", "zstd"):
        other = FakeImage([FakeLayer(FILES, compression=compression)])
        assert indexes(plain, "s")[0].entries == indexes(other, "s")[0].entries


def test_index_json_is_canonical_and_round_trips(tmp_path: Path) -> None:
    stack = indexes(IMAGE, "img")
    data = dumps(stack)
    assert data == dumps(indexes(IMAGE, "img"))
    doc = json.loads(data)
    assert doc["format"] == FORMAT and data == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    assert loads(data, "x") == stack
    write_index(stack, str(tmp_path / "i.json"))
    assert read_index(str(tmp_path / "i.json")) == stack


def test_a_name_that_is_not_utf8_survives_the_json_round_trip() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tf:
        tf.addfile(tarfile.TarInfo("caf\xe9"), io.BytesIO(b""))
    blob = buf.getvalue()
    layer = Layer(Descriptor(MEDIA["none"], sha(blob), len(blob)), sha(blob), 0, (), opener=lambda: io.BytesIO(blob))
    index = scan_layer(layer, "s", (), "linux/amd64")
    assert index.entries[0].path == "caf\udce9"
    assert loads(dumps([index]), "x") == (index,)


@pytest.mark.parametrize("data", [b"{", b"[]", b'{"format": "other"}', b'{"format": "' + FORMAT.encode() + b'"}'],
                         ids=["not-json", "list", "wrong-format", "no-layers"])
def test_a_bad_index_file_is_one_clear_error(data: bytes) -> None:
    with pytest.raises(InvalidIndex, match="lamina scan|malformed"):
        loads(data, "bad.json")


def test_scan_source_defaults_to_every_layer_or_a_selector(tmp_path: Path) -> None:
    write_oci_dir(IMAGE, str(tmp_path / "img"))
    assert [l.index for l in scan_source(str(tmp_path / "img")).layers] == [0, 1, 2]
    assert [l.index for l in scan_source(str(tmp_path / "img"), "1:").layers] == [1, 2]
    assert scan_source(str(tmp_path / "img"), name="named").layers[0].source == "named"


def test_a_bundle_scans_its_selected_layers_and_names_its_recorded_source(tmp_path: Path) -> None:
    write_oci_dir(IMAGE, str(tmp_path / "img"))
    image = open_image(str(tmp_path / "img"), name="docker-archive:app.tar")
    extract(image, select(image, parse_selector("1")), str(tmp_path / "bundle"), "1")
    result = scan_source(str(tmp_path / "bundle"))
    (layer,) = result.layers
    assert (layer.index, layer.source) == (1, "docker-archive:app.tar")
    assert layer.below == (image.layers[0].descriptor.digest,)  # from the manifest; its blob is not there
    # A selector in a sparse bundle: layers without bytes are skipped and reported.
    sparse = scan_source(f"oci:{tmp_path / 'bundle'}", ":")
    assert [l.index for l in sparse.layers] == [1] and sparse.skipped == (0, 2)
    # The index depends on the bundle's content only, not on where it is.
    shutil.copytree(tmp_path / "bundle", tmp_path / "elsewhere")
    assert dumps(scan_source(str(tmp_path / "elsewhere")).layers) == dumps(result.layers)


def test_a_corrupt_layer_is_refused(tmp_path: Path) -> None:
    write_oci_dir(IMAGE, str(tmp_path / "img"))
    digest = oci_manifest(str(tmp_path / "img"))["layers"][0]["digest"]
    flip_byte(blob_file(str(tmp_path / "img"), digest), 600)
    with pytest.raises(DigestMismatch):
        scan_source(str(tmp_path / "img"), "0")


def test_scan_image_counts_only_same_source_layers_below_a_layer_lamina_added(tmp_path: Path) -> None:
    composed = FakeImage(IMAGE.layers, config_extra={"history": [
        {"created_by": "ADD rootfs /"},
        {"created_by": "RUN a", "comment": "lamina: layer sha256:aa from docker-archive:a.tar (1:)"},
        {"created_by": "RUN b", "comment": "lamina: layer sha256:bb from docker-archive:a.tar (1:)"},
    ]})
    write_oci_dir(composed, str(tmp_path / "img"))
    base, first, second = scan_image(open_image(str(tmp_path / "img")))
    assert base.below == () and first.below == () and second.below == (first.digest,)


def test_scan_image_knows_the_layers_lamina_recorded_an_added_layer_was_built_on(tmp_path: Path) -> None:
    layers = [FakeLayer({f"f{i}": str(i).encode()}) for i in range(4)]
    composed = FakeImage(layers, config_extra={"history": [
        {"created_by": "ADD rootfs /"},
        {"created_by": "ADD more /"},
        {"created_by": "RUN a", "comment": "lamina: layer sha256:aa from a.tar (f(x)); built on layers 0-1"},
        {"created_by": "RUN b", "comment": "lamina: layer sha256:bb from b.tar (1:); built on no layer here"},
    ]})
    write_oci_dir(composed, str(tmp_path / "img"))
    scanned = scan_image(open_image(str(tmp_path / "img")))
    digests = [l.digest for l in scanned]
    assert [len(l.below) for l in scanned] == [0, 1, 2, 0]
    assert scanned[2].below == tuple(digests[:2])


class _Zeros(io.RawIOBase):
    """`size` bytes: an ELF head, then zeros, produced as they are read."""

    def __init__(self, head: bytes, size: int) -> None:
        super().__init__()
        self._head, self._size, self._pos = head, size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = min(len(buffer), self._size - self._pos)
        k = max(0, min(n, len(self._head) - self._pos))
        buffer[:k] = self._head[self._pos: self._pos + k]
        buffer[k:n] = bytes(n - k)
        self._pos += n
        return n


def _big_layout(root: Path, size: int, elf: bytes) -> None:
    """An OCI layout whose one uncompressed layer holds a `size`-byte ELF file, written as a stream."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    tmp = root / "layer.tar"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("opt/big")
        info.size = size
        tf.addfile(info, _Zeros(elf, size))  # type: ignore[arg-type]
    h = hashlib.sha256()
    with open(tmp, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    layer = "sha256:" + h.hexdigest()
    os.rename(tmp, blobs / layer[7:])

    def put(doc: dict) -> dict:
        data = json.dumps(doc).encode()
        (blobs / sha(data)[7:]).write_bytes(data)
        return {"digest": sha(data), "size": len(data)}

    config = put({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer]}})
    manifest = put({"schemaVersion": 2, "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer,
                                "size": os.path.getsize(blobs / layer[7:])}]})
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest}]}))
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')


@pytest.mark.parametrize("gap", [0, 12 << 20], ids=["dynamic-first", "dynamic-beyond-the-head-limit"])
def test_a_large_layer_is_scanned_in_bounded_memory(tmp_path: Path, gap: int) -> None:
    size = 96 << 20
    _big_layout(tmp_path / "img", size, make_elf(needed=["libbig.so"], gap=gap))
    tracemalloc.start()
    try:
        (layer,) = scan_source(str(tmp_path / "img")).layers
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (entry,) = layer.entries
    assert entry.size == size and entry.elf is not None and entry.elf.needed == ("libbig.so",)
    # 1 MiB chunks in a few buffers, plus at most elf.HEAD_LIMIT (8 MiB) of one ELF file's start
    assert peak < (6 << 20 if gap == 0 else 16 << 20), f"peak {peak >> 20} MiB scanning a {size >> 20} MiB layer"


# ----------------------------------------------------------------------------------------------
# The layer of a composed image's own files
# ----------------------------------------------------------------------------------------------


def test_the_files_layer_index_is_of_the_layer_compose_takes(tmp_path: Path) -> None:
    from lamina.analyze.scan import scan_files_layer
    from lamina.build import build
    from lamina.newlayer import write_files_layer_dir
    from lamina.spec import parse_spec

    (tmp_path / "app").write_bytes(make_elf(type="exec", interp="/lib/ld.so", needed=["libfoo.so.1"]))
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_bytes(b"<html>")
    files = [("/usr/bin/app", str(tmp_path / "app")), ("/srv/index.html", str(tmp_path / "site" / "index.html"))]
    index = scan_files_layer(write_files_layer_dir(files, str(tmp_path / "fl")), "files of //app:img")

    # compose packing the same files itself makes the very layer that was indexed
    spec = parse_spec({"platform": "linux/amd64", "files": [{"src": str(tmp_path / "app"), "dest": "/usr/bin/app"}],
                       "file_dirs": [{"src": str(tmp_path / "site"), "dest": "/srv"}], "format": "oci"})
    image = build(spec, str(tmp_path / "out"))
    top = image.layers[-1]
    assert (index.digest, index.diff_id) == (top.descriptor.digest, top.diff_id)  # the very same layer
    assert index.on_top and index.source == "files of //app:img" and index.created_by == "lamina: files"
    app = next(e for e in index.entries if e.path == "usr/bin/app")
    assert app.elf is not None and app.elf.needed == ("libfoo.so.1",)
    assert loads(dumps([index]), "x")[0] == index  # on_top survives the index file


def test_the_files_layer_knows_every_layer_below_it() -> None:
    from lamina.analyze.check import check
    from lamina.analyze.report import Policy

    base = FakeImage([FakeLayer({"etc/": None, "etc/app.conf": b"default"}, "ADD base")])
    other = FakeImage([FakeLayer({"etc/": None, "etc/app.conf": b"other"}, "ADD other")])
    files = FakeImage([FakeLayer({"etc/": None, "etc/app.conf": b"mine"}, "lamina: files")])

    (mine,) = indexes(files, "files of //app:img")
    on_top = dataclasses.replace(mine, on_top=True)
    # the image's own file over the base's is what it is for (as a Dockerfile's COPY), not a conflict ...
    assert check(indexes(base, "base.tar") + (on_top,), Policy()).findings == ()
    assert len(check(indexes(base, "base.tar") + (mine,), Policy()).of_kind("conflict")) == 1
    # ... while a source layer's override of another's still is, whoever wins in the end
    stack = indexes(base, "base.tar") + indexes(other, "other.tar") + (on_top,)
    (conflict,) = check(stack, Policy()).of_kind("conflict")
    assert (conflict.layers, conflict.winner) == ((0, 1, 2), 2)
    assert on_top.describe().startswith("files of //app:img (sha256:")



@pytest.mark.parametrize("index", [1000, -1], ids=["past-the-end", "negative"])
def test_a_bundle_whose_selection_names_a_layer_the_image_lacks_is_invalid_source(tmp_path: Path, index: int) -> None:
    from lamina.errors import InvalidSource  # found by lamina_fuzz: IndexError

    write_oci_dir(IMAGE, str(tmp_path / "img"))
    image = open_image(str(tmp_path / "img"))
    extract(image, select(image, parse_selector("1")), str(tmp_path / "bundle"), "1")
    path = tmp_path / "bundle" / "lamina-selection.json"
    selection = json.loads(path.read_text())
    selection["layers"][0]["index"] = index
    path.write_text(json.dumps(selection))
    with pytest.raises(InvalidSource, match=f"names layer {index}, but the image has 3"):
        scan_source(str(tmp_path / "bundle"))
