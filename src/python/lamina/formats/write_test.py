"""Tests of the image writers: round trips through readers and validator, determinism, atomic failure."""
from __future__ import annotations

import dataclasses
import json
import os
import tarfile

import pytest

from lamina.build import build
from lamina.compose import compose
from lamina.errors import DigestMismatch, InvalidSource
from lamina.formats.write import FORMATS, write, write_docker_archive, write_oci_layout
from lamina.image import Image, Layer, Taken
from lamina.sources import open_image
from lamina.spec import parse_spec
from lamina.validate import validate
from lamina_testing.images import (
    FakeImage,
    FakeLayer,
    blob_file,
    flip_byte,
    leftovers,
    oci_manifest,
    sha,
    tree,
    write_docker_classic,
    write_oci_dir,
)
from lamina_testing.kernel import count_kernel_copies

BASE = FakeImage([FakeLayer({"etc/os-release": b"ID=base\n"}, "ADD base /"),
                  FakeLayer({"bin/sh": b"#!sh\n" * 50}, "RUN sh", "gzip")])
SOURCE = FakeImage([FakeLayer({"opt/a": b"a" * 3000}, "RUN a", "zstd"), FakeLayer({"opt/b": b"b"}, "RUN b", "gzip")])
TAGS = ("example.com/app:1", "example.com/app:latest")


def _take(layer: Layer, source: str, selector: str, platform, trusted: bool = False) -> Layer:  # type: ignore[no-untyped-def]
    """`layer` as a composition takes it from `source`; `trusted`: as if `lamina extract` verified it."""
    return dataclasses.replace(layer, source=source, taken=Taken(selector, "", platform),
                               verified_by="lamina extract" if trusted else "")


def _sources(tmp_path) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    base, source = str(tmp_path / "base"), str(tmp_path / "source.tar")
    if not os.path.exists(base):
        write_oci_dir(BASE, base)
        write_docker_classic({"source:1": SOURCE}, source)
    return base, source


def _composed(tmp_path) -> Image:  # type: ignore[no-untyped-def]
    base_path, source_path = _sources(tmp_path)
    base, source = open_image("oci:" + base_path), open_image(source_path)
    added = [_take(l, source.source, ":", source.platform) for l in source.layers]
    return compose(base, added, tags=TAGS)


def _out(tmp_path, fmt: str, name: str = "out") -> str:  # type: ignore[no-untyped-def]
    return str(tmp_path / (name if fmt == "oci" else name + ".tar"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_written_image_reads_back_and_validates(tmp_path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    composed = _composed(tmp_path)
    out = _out(tmp_path, fmt)
    write(composed, fmt, out)
    for ref in (f"{fmt}:{out}", out):
        image = open_image(ref)
        assert image.config_bytes == composed.config_bytes
        assert [l.descriptor.digest for l in image.layers] == [l.descriptor.digest for l in composed.layers]
        assert image.diff_ids == tuple(json.loads(composed.config_bytes)["rootfs"]["diff_ids"])
        assert image.tags == TAGS
        assert validate(image).layers == 4
    assert leftovers(str(tmp_path)) == []


def test_docker_archive_is_also_an_oci_archive(tmp_path) -> None:  # type: ignore[no-untyped-def]
    composed = _composed(tmp_path)
    out = _out(tmp_path, "docker-archive")
    write_docker_archive(composed, out)
    image = open_image(f"oci-archive:{out}:example.com/app:latest")
    assert image.manifest_media_type == "application/vnd.oci.image.manifest.v1+json"
    assert image.config_descriptor == composed.config_descriptor
    with tarfile.open(out) as tf:
        manifest = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest == [{"Config": "blobs/sha256/" + composed.config_descriptor.hex, "RepoTags": list(TAGS),
                         "Layers": ["blobs/sha256/" + l.descriptor.hex for l in composed.layers]}]


def _expected_files(composed: Image, fmt: str) -> set[str]:
    digests = {l.descriptor.hex for l in composed.layers} | {composed.config_descriptor.hex, composed.manifest_descriptor.hex}
    extra = {"manifest.json"} if fmt == "docker-archive" else set()
    return {"oci-layout", "index.json"} | {f"blobs/sha256/{d}" for d in digests} | extra


def test_oci_dir_holds_exactly_the_image(tmp_path) -> None:  # type: ignore[no-untyped-def]
    composed = _composed(tmp_path)
    out = _out(tmp_path, "oci")
    write_oci_layout(composed, out)
    assert set(tree(out)) == _expected_files(composed, "oci")
    index = json.loads(tree(out)["index.json"])
    assert [e["annotations"]["org.opencontainers.image.ref.name"] for e in index["manifests"]] == list(TAGS)
    assert {e["digest"] for e in index["manifests"]} == {composed.manifest_descriptor.digest}
    assert tree(out)["blobs/sha256/" + composed.manifest_descriptor.hex] == composed.manifest_bytes


@pytest.mark.parametrize("fmt", ["oci-archive", "docker-archive"])
def test_archives_have_sorted_fixed_headers(tmp_path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    out = _out(tmp_path, fmt)
    write(_composed(tmp_path), fmt, out)
    with tarfile.open(out) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names[:2] == ["blobs", "blobs/sha256"] and names[2:] == sorted(names[2:])
    assert set(names[2:]) == _expected_files(_composed(tmp_path), fmt)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    assert len(names) == len(set(names))


def _spec(tmp_path, fmt: str) -> dict:  # type: ignore[no-untyped-def]
    base, source = _sources(tmp_path)
    return {"base": "oci:" + base, "layers": [{"source": source, "layer": ":"}], "format": fmt, "tags": list(TAGS),
            "config": {"env": {"A": "1"}, "cmd": ["/bin/sh"]}}


def _files(path: str) -> dict[str, bytes]:
    if os.path.isdir(path):
        return tree(path)
    with open(path, "rb") as f:
        return {"": f.read()}


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_spec_twice_gives_identical_bytes(tmp_path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    spec = parse_spec(_spec(tmp_path, fmt))
    first, second = _out(tmp_path / "a", fmt), _out(tmp_path / "b", fmt)
    one, two = build(spec, first), build(spec, second)
    assert one.manifest_descriptor.digest == two.manifest_descriptor.digest
    assert _files(first) == _files(second)
    assert leftovers(str(tmp_path / "a")) == leftovers(str(tmp_path / "b")) == []


def test_rewriting_an_oci_dir_is_idempotent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    composed = _composed(tmp_path)
    out = _out(tmp_path, "oci")
    write_oci_layout(composed, out)
    before = tree(out)
    layer_blob = os.path.join(out, "blobs", "sha256", composed.layers[2].descriptor.hex)
    inode = os.stat(layer_blob).st_ino
    write_oci_layout(composed, out)  # over itself: links the blobs already there
    assert tree(out) == before
    assert os.stat(layer_blob).st_ino == inode
    image = open_image(out)
    again = compose(image, [], tags=TAGS)  # compose from the dir into the same dir
    write_oci_layout(again, out)
    assert tree(out) == before
    assert again.manifest_bytes == composed.manifest_bytes
    assert validate(open_image(out)).layers == 4
    assert leftovers(str(tmp_path)) == []


def test_rewrite_drops_blobs_the_new_image_does_not_use(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = _out(tmp_path, "oci")
    write_oci_layout(_composed(tmp_path), out)
    base = open_image("oci:" + _sources(tmp_path)[0])
    smaller = compose(base, [])
    write_oci_layout(smaller, out)
    blobs = set(os.listdir(os.path.join(out, "blobs", "sha256")))
    assert blobs == {l.descriptor.hex for l in base.layers} | {smaller.config_descriptor.hex, smaller.manifest_descriptor.hex}


def _flipped_source(tmp_path) -> Image:  # type: ignore[no-untyped-def]
    """An image none of whose blobs are in any output written before (so none can be reused)."""
    path = str(tmp_path / "flipped")
    write_oci_dir(FakeImage([FakeLayer({"x/y": b"flip me" * 100}, "RUN flip", "gzip")]), path)
    flip_byte(blob_file(path, oci_manifest(path)["layers"][0]["digest"]), 30)
    return open_image("oci:" + path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_failing_write_leaves_nothing(tmp_path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    source = _flipped_source(tmp_path)
    composed = compose(None, [_take(l, "flipped", ":", source.platform) for l in source.layers],
                       platform=source.platform)
    out = _out(tmp_path / "dest", fmt)
    with pytest.raises(DigestMismatch, match=f"{source.layers[0].descriptor.digest}.*: blob content is sha256:"):
        write(composed, fmt, out)
    assert not os.path.lexists(out)
    assert leftovers(str(tmp_path / "dest")) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_failing_write_keeps_the_previous_output(tmp_path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    out = _out(tmp_path, fmt)
    write(_composed(tmp_path), fmt, out)
    before = _files(out)
    source = _flipped_source(tmp_path)
    composed = compose(None, [_take(l, "flipped", ":", source.platform) for l in source.layers],
                       platform=source.platform)
    with pytest.raises(DigestMismatch):
        write(composed, fmt, out)
    assert _files(out) == before
    assert leftovers(str(tmp_path)) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_layer_missing_from_a_bundle_is_a_clean_error(tmp_path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "sparse")
    write_oci_dir(SOURCE, path)
    os.unlink(blob_file(path, oci_manifest(path)["layers"][1]["digest"]))
    source = open_image("oci:" + path)
    composed = compose(None, [_take(source.layers[1], "sparse", "1", source.platform, trusted=True)],
                       platform=source.platform)
    out = _out(tmp_path, fmt)
    with pytest.raises(InvalidSource, match=f"blob {source.layers[1].descriptor.digest} has no bytes in its source"):
        write(composed, fmt, out)
    assert not os.path.lexists(out) and leftovers(str(tmp_path)) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_repeated_layer_is_stored_once(tmp_path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    base = open_image("oci:" + _sources(tmp_path)[0])
    twice = compose(base, [_take(base.layers[1], "b", "1", base.platform)])
    out = _out(tmp_path, fmt)
    write(twice, fmt, out)
    image = open_image(out)
    assert [l.descriptor.digest for l in image.layers] == [l.descriptor.digest for l in base.layers] + [base.layers[1].descriptor.digest]
    assert validate(image).layers == 3


def test_untrusted_layer_is_checked_against_its_diff_id(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "lying")
    write_oci_dir(FakeImage(SOURCE.layers, config_extra={"rootfs": {"type": "layers", "diff_ids": [sha(b"x"), sha(b"y")]}}), path)
    source = open_image("oci:" + path)
    for fmt in FORMATS:
        composed = compose(None, [_take(source.layers[1], "lying", "1", source.platform)], platform=source.platform)
        with pytest.raises(DigestMismatch, match="uncompressed content is " + sha(SOURCE.layers[1].tar) + ", the config says " + sha(b"y")):
            write(composed, fmt, _out(tmp_path / fmt, fmt))
        assert os.listdir(str(tmp_path / fmt)) == []


def test_unknown_format_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="unknown output format 'tarball'"):
        write(_composed(tmp_path), "tarball", str(tmp_path / "x"))


PLAIN = FakeImage([FakeLayer({"opt/p": b"p" * 5000}, "RUN p"), FakeLayer({"opt/q": b"q" * 700}, "RUN q")])


@pytest.mark.parametrize("fmt", FORMATS)
def test_kernel_copy_and_user_space_copy_write_the_same_bytes(tmp_path, fmt: str,  # type: ignore[no-untyped-def]
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # Uncompressed layers straight from a `docker save` archive: the kernel copies them.
    write_docker_classic({"plain:1": PLAIN}, str(tmp_path / "plain.tar"))
    image = open_image(str(tmp_path / "plain.tar"))
    composed = compose(None, [_take(l, image.source, ":", image.platform) for l in image.layers], tags=TAGS,
                       platform=image.platform)
    copies = count_kernel_copies(monkeypatch)
    write(composed, fmt, _out(tmp_path, fmt, "kernel"))
    assert sorted(copies) == sorted(len(l.blob) for l in PLAIN.layers)
    monkeypatch.delattr(os, "copy_file_range")
    write(composed, fmt, _out(tmp_path, fmt, "user"))
    kernel, user = _out(tmp_path, fmt, "kernel"), _out(tmp_path, fmt, "user")
    if fmt == "oci":
        assert tree(kernel) == tree(user) and len(tree(kernel)) == 6  # 2 layers, config, manifest, index, layout
    else:
        with open(kernel, "rb") as a, open(user, "rb") as b:
            assert a.read() == b.read()
    assert validate(open_image(f"{fmt}:{kernel}")).layers == 2


def test_archive_bytes_are_what_tarfile_writes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The tar writer lays out headers, padding and the end of archive exactly as tarfile's "w" mode.
    composed = _composed(tmp_path)
    out = _out(tmp_path, "docker-archive")
    write_docker_archive(composed, out)
    again = str(tmp_path / "again.tar")
    with tarfile.open(out) as src, tarfile.open(again, "w", format=tarfile.USTAR_FORMAT) as dst:
        for info in src:
            dst.addfile(info, src.extractfile(info) if info.isreg() else None)
    with open(out, "rb") as a, open(again, "rb") as b:
        assert a.read() == b.read()


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_a_verified_layer_is_copied_by_the_kernel_without_reading_it_back(tmp_path, fmt: str,  # type: ignore[no-untyped-def]
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    write_docker_classic({"plain:1": PLAIN}, str(tmp_path / "plain.tar"))
    image = open_image(str(tmp_path / "plain.tar"))
    read_back: list = []
    real = os.preadv
    monkeypatch.setattr(os, "preadv", lambda fd, bufs, pos: read_back.append(pos) or real(fd, bufs, pos))
    copies = count_kernel_copies(monkeypatch)
    vouched = compose(None, [_take(l, image.source, ":", image.platform, trusted=True) for l in image.layers],
                      platform=image.platform)
    write(vouched, fmt, _out(tmp_path, fmt, "vouched"))
    assert sorted(copies) == sorted(len(l.blob) for l in PLAIN.layers) and read_back == []
    checked = compose(None, [_take(l, image.source, ":", image.platform) for l in image.layers], platform=image.platform)
    write(checked, fmt, _out(tmp_path, fmt, "checked"))
    assert read_back  # a layer nobody verified is hashed as it was written
    with open(_out(tmp_path, fmt, "vouched"), "rb") as a, open(_out(tmp_path, fmt, "checked"), "rb") as b:
        assert a.read() == b.read()


def test_a_member_of_8_gib_or_more_gets_a_gnu_base_256_size() -> None:
    from lamina.formats.write import _tarinfo, header_bytes

    size = 9 << 30  # more than ustar's 11 octal digits hold
    header = header_bytes(_tarinfo("blobs/sha256/" + "a" * 64, size))
    assert len(header) == tarfile.BLOCKSIZE and header[124] == 0x80  # the base-256 marker of the size field
    parsed = tarfile.TarInfo.frombuf(header, tarfile.ENCODING, "surrogateescape")
    assert (parsed.name, parsed.size, parsed.mode, parsed.mtime) == ("blobs/sha256/" + "a" * 64, size, 0o644, 0)
    small = _tarinfo("x", (8 << 30) - 1)  # the largest ustar size: as ever
    assert header_bytes(small) == small.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape")


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_archives_with_members_past_the_ustar_limit_read_back(tmp_path, fmt: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import lamina.formats.write as writer

    monkeypatch.setattr(writer, "USTAR_MAX_SIZE", 600)  # as if the layers were 8 GiB
    image = _composed(tmp_path)
    out = _out(tmp_path, fmt)
    write(image, fmt, out)
    with open(out, "rb") as f:  # a GNU header for each big member, ustar for the rest
        magics = set()
        offset = 0
        data = f.read()
        while data[offset:offset + 512].strip(b"\0"):
            info = tarfile.TarInfo.frombuf(data[offset:offset + 512], tarfile.ENCODING, "surrogateescape")
            magics.add((info.size > 600, data[offset + 257:offset + 265]))
            offset += 512 + -(-info.size // 512) * 512
    assert magics == {(True, tarfile.GNU_MAGIC), (False, tarfile.POSIX_MAGIC)}
    assert validate(open_image(out)).layers == len(image.layers)
