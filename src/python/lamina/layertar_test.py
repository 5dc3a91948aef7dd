"""Tests of the layer tar walker: normalized entries, content on request, errors, every layer read to its end."""
from __future__ import annotations

import io
import tarfile
from typing import IO

import pytest

from lamina.errors import DigestMismatch, InvalidSource, UnsafeArchive
from lamina.image import Image, Layer
from lamina.layertar import Entry, entries, normalize, walk
from lamina.model import Descriptor
from lamina.select import parse_selector, select
from lamina_testing.images import MEDIA, layer_tar, sha
from lamina_testing.tarref import tarfile_members


def _layer(tar: bytes, blob: bytes = b"") -> Layer:
    """An uncompressed layer holding `blob` (default: `tar`) whose descriptor and diff_id say `tar`."""
    data = blob or tar
    return Layer(Descriptor(MEDIA["none"], sha(tar), len(tar)), sha(tar), 0, ({"created_by": "test"},),
                 opener=lambda: io.BytesIO(data))


def _raw_tar(*infos: tarfile.TarInfo) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info in infos:
            tf.addfile(info, io.BytesIO(b"\0" * info.size) if info.isreg() else None)
    return buf.getvalue()


def test_entries_are_normalized_hard_links_too_but_not_symlinks() -> None:
    tar = layer_tar({".": None, "./bin/": None, "bin//sh": b"#!", "bin/ln": "=>./bin//sh", "bin/sym": "->../bin/./sh"})
    assert list(entries(_layer(tar))) == [
        Entry("", "dir", 0, 0o755, 0, 0),
        Entry("bin", "dir", 0, 0o755, 0, 0),
        Entry("bin/sh", "file", 2, 0o755, 0, 0),
        Entry("bin/ln", "hardlink", 0, 0o644, 0, 0, "bin/sh"),
        Entry("bin/sym", "symlink", 0, 0o644, 0, 0, "../bin/./sh"),
    ]


def test_walk_reads_content_of_files_only() -> None:
    tar = layer_tar({"etc": None, "etc/a": b"alpha", "etc/b": "->a", "etc/c": b""})

    def read(entry: Entry, f: IO[bytes]) -> bytes:
        return entry.path.encode() + b":" + f.read()

    assert [(e.path, v) for e, v in walk(_layer(tar), "t", read)] == [
        ("etc", None), ("etc/a", b"etc/a:alpha"), ("etc/b", None), ("etc/c", b"etc/c:")]


@pytest.mark.parametrize("name, linkname", [("a/../../x", ""), ("ok", "../../etc/passwd")], ids=["name", "hardlink"])
def test_dot_dot_escapes_are_refused(name: str, linkname: str) -> None:
    info = tarfile.TarInfo(name)
    if linkname:
        info.type, info.linkname = tarfile.LNKTYPE, linkname
    with pytest.raises(UnsafeArchive, match=r"^what: entry '.*' escapes the root with '\.\.'$"):
        list(entries(_layer(_raw_tar(info)), "what"))


def test_a_truncated_file_is_invalid_source_even_while_its_content_is_read() -> None:
    info = tarfile.TarInfo("big")
    info.size = 10_000
    tar = _raw_tar(info)
    cut = tar[:3000]
    layer = Layer(Descriptor(MEDIA["none"], sha(cut), len(cut)), sha(cut), 0, (), opener=lambda: io.BytesIO(cut))
    with pytest.raises(InvalidSource, match=r"^what: (truncated layer|not a readable tar layer)"):
        list(walk(layer, "what", lambda e, f: f.read()))
    with pytest.raises(InvalidSource, match=r"^what: (truncated layer|not a readable tar layer)"):
        list(entries(layer, "what"))


def test_not_a_tar_is_invalid_source() -> None:
    data = b"not a tar at all" * 64
    layer = Layer(Descriptor(MEDIA["none"], sha(data), len(data)), sha(data), 0, (), opener=lambda: io.BytesIO(data))
    with pytest.raises(InvalidSource, match=r"^what: not a readable tar layer"):
        list(entries(layer, "what"))


def _flipped_tail(tar: bytes) -> bytes:
    """`tar` with its last byte (end-of-archive padding, after every header) changed."""
    return tar[:-1] + b"\1"


def test_the_bytes_after_the_last_header_are_read_and_verified() -> None:
    tar = layer_tar({"etc/a": b"alpha"})
    assert [e.path for e in entries(_layer(tar))] == ["etc/a"]
    with pytest.raises(DigestMismatch):
        list(entries(_layer(tar, _flipped_tail(tar))))


def test_path_selector_reads_the_matching_layer_to_its_end() -> None:
    good = layer_tar({"etc/os-release": b"ID=x\n"})
    tar = layer_tar({"usr/bin/tool": b"tool"})
    layers = (_layer(good), Layer(Descriptor(MEDIA["none"], sha(tar), len(tar)), sha(tar), 1, ({"created_by": "t"},),
                                  opener=lambda: io.BytesIO(_flipped_tail(tar))))
    image = Image("test", b"{}", Descriptor("application/vnd.oci.image.config.v1+json", sha(b"{}"), 2), layers)
    with pytest.raises(DigestMismatch):
        select(image, parse_selector("path=/usr/bin/tool"))


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["ustar", "gnu", "pax"])
def test_entries_are_what_tarfile_reads_normalized(fmt: int) -> None:
    """walk's entries are tarfile's members, normalized as walk always did (see tarread_test for the reader itself)."""
    long_dir = "usr/" + "l" * 90 + "/" + "m" * 60
    infos = []
    for name, kind, size, link in [("./", tarfile.DIRTYPE, 0, ""), (long_dir + "//", tarfile.DIRTYPE, 0, ""),
                                   (long_dir + "/./file", tarfile.REGTYPE, 3, ""), ("etc/h", tarfile.LNKTYPE, 0, "./" + long_dir + "/file"),
                                   ("etc/s", tarfile.SYMTYPE, 0, "../" + "s" * 120), ("dev/f", tarfile.FIFOTYPE, 0, ""),
                                   ("big", tarfile.REGTYPE, 2, "")]:
        info = tarfile.TarInfo(name)
        info.type, info.size, info.linkname, info.uid = kind, size, link, 3_000_000 if name == "big" else 7
        infos.append(info)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info in infos:
            if fmt != tarfile.USTAR_FORMAT or (info.uid < 1 << 21 and len(info.linkname) <= 100):
                tf.addfile(info, io.BytesIO(b"\1" * info.size) if info.isreg() else None)
    tar = buf.getvalue()
    expected = [Entry(normalize(m.name, "t"), m.kind, m.size, m.mode, m.uid, m.gid,
                      normalize(m.linkname, "t") if m.kind == "hardlink" else m.linkname) for m, _ in tarfile_members(tar)]
    assert len(expected) == (4 if fmt == tarfile.USTAR_FORMAT else 7)
    assert list(entries(_layer(tar), "t")) == expected
    assert [v for _, v in walk(_layer(tar), "t", lambda e, f: f.read())] == [c for _, c in tarfile_members(tar)]
