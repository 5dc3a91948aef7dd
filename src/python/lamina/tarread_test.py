"""Differential tests of lamina.tarread against Python's tarfile, and its refusals of malformed archives."""
from __future__ import annotations

import io
import tarfile
from typing import Optional, Union

import pytest

from lamina.blobs import CHUNK
from lamina.errors import InvalidSource
from lamina.tarread import EXTENDED_LIMIT, Member, members
from lamina_testing.tarref import Trickle, lamina_members, tarfile_members

Field = Union[bytes, int]
END = bytes(1024)


# -- archives written by tarfile -------------------------------------------------------------------


def _info(name: str, type: bytes = tarfile.REGTYPE, size: int = 0, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime, info.mode = type, size, 1_700_000_000, 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def _everything() -> list[tuple[tarfile.TarInfo, bytes]]:
    """Members of every kind, with names and numbers that need each format's extensions."""
    long_dir = "d" * 60 + "/" + "e" * 80  # 141 bytes: ustar splits it into prefix and name
    very_long = "/".join(["p" * 50] * 6)  # 305 bytes: beyond ustar
    out = [(_info("etc", tarfile.DIRTYPE, mode=0o755), b"")]
    for size in (0, 1, 511, 512, 513, 70_000, 2 * CHUNK + 5):
        out.append((_info(f"data/f{size}", size=size), bytes(range(256)) * (size // 256) + b"z" * (size % 256)))
    out += [
        (_info("etc/passwd", size=5, uid=1000, gid=100, uname="u", gname="g"), b"root\n"),
        (_info(long_dir + "/file", size=3), b"abc"),
        (_info(long_dir, tarfile.DIRTYPE), b""),
        (_info(very_long, size=2), b"hi"),
        (_info("usr/share/d\u043ec/\u00fcn\u00efc\u00f6d\u00e9.txt", size=1), b"u"),  # non-ASCII, UTF-8
        (_info("bin/\udcff\udcfe-latin1-\udce9", size=1), b"b"),  # not UTF-8: bytes 0xff 0xfe 0xe9
        (_info("etc/hard", tarfile.LNKTYPE, linkname="etc/passwd"), b""),
        (_info("etc/sym", tarfile.SYMTYPE, linkname="../usr/lib/" + "t" * 120), b""),  # a long link name
        (_info("etc/sym-utf8", tarfile.SYMTYPE, linkname="\u00e9t\u00e9"), b""),
        (_info("dev/fifo", tarfile.FIFOTYPE), b""),
        (_info("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666), b""),
        (_info("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0), b""),
        (_info("cont", tarfile.CONTTYPE, size=4), b"cont"),
        (_info("big-ids", size=1, uid=3_000_000, gid=70_000_000), b"i"),  # beyond 7 octal digits
        (_info("old-mtime", size=1, mtime=-1), b"m"),
        (_info("mode-bits", size=0, mode=0o104755), b""),
    ]
    return out


def _written(fmt: int, items: list[tuple[tarfile.TarInfo, bytes]], pax_headers: Optional[dict[str, str]] = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape",
                      pax_headers=pax_headers) as tf:  # type: ignore[call-overload]
        for info, data in items:
            try:
                tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
            except ValueError:  # a name or number this format cannot hold
                assert fmt == tarfile.USTAR_FORMAT
    return buf.getvalue()


# -- archives made by hand -------------------------------------------------------------------------


def _field(value: Field, width: int) -> bytes:
    raw = b"%0*o" % (width - 1, value) if isinstance(value, int) else value
    assert len(raw) <= width
    return raw + bytes(width - len(raw))


def header(name: bytes = b"f", size: Field = 0, type: bytes = b"0", mode: Field = 0o644, uid: Field = 0,
           gid: Field = 0, mtime: Field = 0, linkname: bytes = b"", magic: bytes = b"ustar\x0000",
           devmajor: Field = b"", devminor: Field = b"", prefix: bytes = b"", chksum: Optional[bytes] = None,
           signed: bool = False) -> bytes:
    """One 512-byte header; its checksum correct (the unsigned or signed sum) unless given."""
    block = bytearray(b"".join([
        _field(name, 100), _field(mode, 8), _field(uid, 8), _field(gid, 8), _field(size, 12), _field(mtime, 12),
        b" " * 8, type, _field(linkname, 100), _field(magic, 8), bytes(64), _field(devmajor, 8),
        _field(devminor, 8), _field(prefix, 155), bytes(12)]))
    assert len(block) == 512
    if chksum is None:
        total = sum((b - 256 if b >= 128 and signed else b) for b in block)
        chksum = b"%06o\0 " % total
    block[148:156] = _field(chksum, 8)
    return bytes(block)


def member(data: bytes = b"", **fields: object) -> bytes:
    fields.setdefault("size", len(data))
    return header(**fields) + data + bytes(-len(data) % 512)  # type: ignore[arg-type]


def record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n += 1
    return str(n).encode() + body


def pax(*records: tuple[bytes, bytes], type: bytes = b"x", raw: bytes = b"") -> bytes:
    return member(raw or b"".join(record(k, v) for k, v in records), name=b"PaxHeader/f", type=type)


def gnu_long(name: bytes, type: bytes = b"L") -> bytes:
    return member(name + b"\0", name=b"././@LongLink", type=type, magic=b"ustar  \0")


def base256(n: int, width: int) -> bytes:
    return bytes([0x80 if n >= 0 else 0xFF]) + (n % (1 << (8 * (width - 1)))).to_bytes(width - 1, "big")


def _unsigned(name: bytes) -> int:
    """The checksum of header(name, 1)."""
    block = header(name, 1)
    return sum(block[:148]) + 8 * 0x20 + sum(block[156:])


HANDMADE: dict[str, bytes] = {
    "v7": member(b"hello", name=b"old", magic=b"") + member(name=b"olddir/", type=b"\0", magic=b"") + END,
    "v7-dir-with-size": member(name=b"d/", type=b"\0", size=3, magic=b"") + member(b"x", name=b"next") + END,
    "prefix": member(b"x", name=b"doc/x", prefix=b"usr/share") + member(name=b"dir//", type=b"5", prefix=b"a/b/") + END,
    "gnu-magic-with-prefix-bytes": member(b"x", name=b"n", magic=b"ustar  \0", prefix=b"12345670123") + END,
    "types-with-data-skipped": b"".join(member(b"data!" * 200, name=b"t" + t, type=t) for t in (b"M", b"V", b"D", b"A", b"Z"))
    + member(b"after", name=b"after") + END,
    "types-without-data": member(name=b"fifo", type=b"6", size=700) + member(name=b"dir", type=b"5", size=100)
    + member(name=b"chr", type=b"3", size=5, devmajor=1, devminor=5) + member(name=b"ln", type=b"1", size=9, linkname=b"fifo")
    + member(name=b"sl", type=b"2", size=9, linkname=b"fifo") + member(b"ok", name=b"file") + END,
    "signed-checksum": member(b"s", name=b"\xe9t\xe9\xff", signed=True) + member(b"u", name=b"\xe9t\xe9") + END,
    "checksum-formats": member(b"a", name=b"a", chksum=b"%07o" % _unsigned(b"a")) + member(
        b"b", name=b"b", chksum=b"  %o " % _unsigned(b"b")) + member(b"c", name=b"c", chksum=b"%o\0jk" % _unsigned(b"c")) + END,
    "odd-numbers": member(b"abc", name=b"n1", mode=b"  644 ", uid=b"\x1c12", gid=b"0o17", size=b" 3") + member(
        b"de", name=b"n2", mode=b"+7_5_5", uid=b"", gid=b" \t ", size=b"2\0garbage") + END,
    "base-256": member(b"12345", name=b"b", size=base256(5, 12), uid=base256(10**12, 8), gid=base256(-2, 8),
                       mtime=base256(-5, 12), magic=b"ustar  \0") + END,
    "pax-records": pax((b"path", b"pax/named/"), (b"uid", b"abc"), (b"gid", b" 12 "), (b"mtime", b"1.5"),
                       (b"comment", b"a=b\nc"), (b"key with space", b"v"), (b"SCHILY.xattr.x", b"\xff\x00"))
    + member(b"x", name=b"short", uid=5, gid=6) + pax((b"linkpath", b"target\xe9"), (b"size", b"0")) + member(
        name=b"l", type=b"2", size=0) + END,
    "pax-size": pax((b"size", b"5")) + member(b"12345", name=b"f", size=0) + pax((b"size", b"junk")) + member(
        name=b"zero", size=0) + pax((b"size", b"700")) + member(b"7" * 700, name=b"other", type=b"V", size=1) + END,
    "pax-size-of-a-fifo": pax((b"size", b"12345")) + member(name=b"fifo", type=b"6") + member(b"f", name=b"f") + END,
    "long-name-then-pax": gnu_long(b"from/L") + pax((b"path", b"from/x")) + member(b"a", name=b"hdr") + END,
    "pax-then-long-name": pax((b"path", b"from/x")) + gnu_long(b"from/L") + member(b"a", name=b"hdr") + END,
    "two-long-names": gnu_long(b"first") + gnu_long(b"second") + gnu_long(b"link1", b"K") + gnu_long(b"link2", b"K")
    + member(name=b"h", type=b"1", linkname=b"x") + END,
    "long-link-then-pax": gnu_long(b"fromK", b"K") + pax((b"linkpath", b"fromx"), (b"path", b"p")) + member(
        name=b"s", type=b"2", linkname=b"hdr") + END,
    "long-name-no-nul": member(b"exact" * 100 + b"abcdefghijkl", name=b"././@LongLink", type=b"L") + member(b"x", name=b"h") + END,
    "empty-long-names": member(name=b"././@LongLink", type=b"L") + member(name=b"././@LongLink", type=b"K") + member(
        b"x", name=b"h") + END,
    "long-name-dir": gnu_long(b"longdir/") + member(name=b"longdir/", type=b"\0") + gnu_long(b"notdir/") + member(
        name=b"x", type=b"\0") + END,
    "global": pax((b"uid", b"1"), (b"path", b"every"), (b"comment", b"c"), type=b"g") + member(b"a", name=b"a")
    + pax((b"comment", b"x")) + pax((b"uid", b"2"), (b"linkpath", b"gl"), type=b"g") + member(b"b", name=b"b")
    + member(name=b"c", type=b"2", linkname=b"own") + pax((b"path", b"mine")) + member(name=b"d") + END,
    "solaris-X": pax((b"path", b"solaris"), type=b"X") + member(b"s", name=b"s") + END,
    "empty-pax": member(b"", name=b"PaxHeader/e", type=b"x") + member(b"e", name=b"e") + END,
    "no-end-blocks": member(b"abc", name=b"a") + member(name=b"d", type=b"5"),
    "one-end-block-then-garbage": member(b"abc", name=b"a") + bytes(512) + b"garbage" * 500,
    "garbage-after-the-end": member(b"abc", name=b"a") + END + bytes(range(256)) * 13 + b"tail",
    "only-zeros": bytes(512),
    "zeros-then-junk": bytes(512) + b"\x01" * 100,
}


def _archives() -> dict[str, bytes]:
    out = {}
    for fmt_name, fmt in (("ustar", tarfile.USTAR_FORMAT), ("gnu", tarfile.GNU_FORMAT), ("pax", tarfile.PAX_FORMAT)):
        out[fmt_name] = _written(fmt, _everything())
        out[fmt_name + "-empty"] = _written(fmt, [])
    out["pax-global"] = _written(tarfile.PAX_FORMAT, _everything()[:12],
                                 {"comment": "made by lamina's tests", "uid": "77", "gid": "x"})
    out["pax-global-path"] = _written(tarfile.PAX_FORMAT, _everything()[:3], {"path": "all/the/same"})
    return {**out, **HANDMADE}


ARCHIVES = _archives()


@pytest.mark.parametrize("name", sorted(ARCHIVES))
def test_members_are_what_tarfile_reads(name: str) -> None:
    data = ARCHIVES[name]
    expected = tarfile_members(data)
    assert lamina_members(data) == expected
    assert lamina_members(data, Trickle, piece=1000) == expected  # short reads from the stream, data in pieces


def test_the_archives_hold_what_they_are_meant_to() -> None:
    """The differential tests are only as good as their archives: check they have the formats' extensions."""
    assert ARCHIVES["ustar"].count(b"ustar\x0000") >= 18 and b"././@LongLink" not in ARCHIVES["ustar"]
    gnu = ARCHIVES["gnu"]
    assert b"././@LongLink" in gnu and b"\x80\x00\x00\x00\x00\x2d\xc6\xc0" in gnu  # L/K and base-256 uid 3000000
    pax_ = ARCHIVES["pax"]
    assert b" path=" in pax_ and b" linkpath=" in pax_ and b" uid=3000000\n" in pax_ and b"hdrcharset=BINARY" in pax_
    names = {m.name for m, _ in tarfile_members(pax_)}
    assert "/".join(["p" * 50] * 6) in names and "bin/\udcff\udcfe-latin1-\udce9" in names
    kinds = {m.kind for m, _ in tarfile_members(gnu)}
    assert kinds == {"file", "dir", "symlink", "hardlink", "other"}
    assert tarfile_members(ARCHIVES["global"])[0][0] == Member("every", "file", 1, 0o644, 1, 0, "")


def test_content_left_unread_is_skipped_and_reads_nothing_once_passed() -> None:
    data = member(b"a" * 3000, name=b"one") + member(b"second", name=b"two") + END
    seen = []
    kept = None
    for m, content in members(io.BytesIO(data), "t"):
        assert content is not None
        if m.name == "one":
            assert content.read(10) == b"a" * 10
            kept = content
        else:
            seen.append(content.read())
    assert seen == [b"second"] and kept is not None and kept.read() == b""


def test_the_stream_is_read_to_its_end_in_bounded_pieces() -> None:
    reads = []

    class Recording(io.BytesIO):
        def read(self, n: Optional[int] = -1) -> bytes:
            reads.append(n)
            return super().read(n)

    data = member(b"x" * (3 * CHUNK), name=b"big") + END + b"\0" * (5 * CHUNK)
    stream = Recording(data)
    assert [m.name for m, _ in members(stream, "t")] == ["big"]
    assert stream.tell() == len(data)
    assert all(n is not None and 0 < n <= CHUNK for n in reads)


# -- refusals --------------------------------------------------------------------------------------

OK = member(b"fine", name=b"ok")
MALFORMED: dict[str, tuple[bytes, str]] = {
    "empty stream": (b"", r"not a readable tar layer \(empty file\)"),
    "partial first header": (b"\x01" * 100, r"truncated layer"),
    "partial later header": (OK + b"x" * 100, r"truncated layer"),
    "not a tar": (b"not a tar at all" * 64, r"not a readable tar layer \(a numeric field of the header at byte 0"),
    "bad checksum later": (OK + header(b"x", chksum=b"0001234") + END, r"bad checksum in the header at byte 1024"),
    "truncated content": (header(b"big", 10_000) + b"x" * 3000, r"truncated layer \(it ends inside the data of big\)"),
    "truncated absurd size": (member(b"x" * 600, name=b"huge", size=base256(1 << 80, 12))[:1200], r"truncated layer"),
    "truncated skipped data": (header(b"v", 10_000, type=b"V") + b"x" * 3000, r"truncated layer"),
    "truncated padding": (header(b"f", 5) + b"12345", r"truncated layer"),
    "pax length too long": (pax(raw=b"99 path=x\n") + OK + END, r"bad record at byte 0 of the pax header at byte 0"),
    "pax length too short": (pax(raw=b"9 path=xyz\n") + OK + END, r"bad record"),
    "pax record without =": (pax(raw=b"10 pathxy\n") + OK + END, r"bad record"),
    "pax record without newline": (pax(raw=b"10 path=xy!") + OK + END, r"bad record"),
    "pax empty key": (pax(raw=b"6 =xyz\n") + OK + END, r"bad record"),
    "pax length zero": (pax(raw=b"0 path=x\n") + OK + END, r"bad record"),
    "pax absurd length": (pax(raw=b"99999999999999999999 path=x\n") + OK + END, r"bad record"),
    "pax length not digits": (pax(raw=b"1x path=x\n") + OK + END, r"bad record length"),
    "pax trailing junk": (pax(raw=record(b"path", b"p") + b"\0\0") + OK + END, r"bad record length at byte 9"),
    "pax negative size": (pax((b"size", b"-5")) + OK + END, r"negative size in the pax header of ok"),
    "negative size": (member(name=b"n", size=b"-1") + END, r"negative size in the header at byte 0"),
    "negative base-256 size": (member(name=b"n", size=base256(-1, 12)) + END, r"negative size"),
    "long name too long": (header(b"././@LongLink", EXTENDED_LIMIT + 1, type=b"L") + END,
                           r"the extended header at byte 0 holds 1048577 bytes, more than 1048576"),
    "pax too long": (header(b"PaxHeader", base256(1 << 40, 12), type=b"x"), r"more than 1048576"),
    "long name at the end": (OK + gnu_long(b"lonely") + END, r"the extended header before byte 2048 has no member after it"),
    "long name truncated": (gnu_long(b"x" * 600)[:700], r"truncated layer \(it ends inside the extended header at byte 0\)"),
    "long name then the stream ends": (gnu_long(b"x"), r"truncated layer \(it ends inside the header at byte 1024\)"),
    "global header at the end": (OK + pax((b"uid", b"1"), type=b"g") + END, r"has no member after it"),
    "global size": (pax((b"size", b"1"), type=b"g") + OK + END, r"the global pax header at byte 0 sets a size"),
    "gnu sparse": (member(b"x", name=b"holes", type=b"S") + END, r"holes is a GNU sparse file"),
    "pax gnu sparse": (pax((b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0")) + OK + END, r"GNU sparse file"),
    "extended header padding": (member(record(b"path", b"p"), name=b"P", type=b"x")[:-1] + b"!" + OK + END,
                                r"padded with other bytes than zeros"),
    "bad mtime": (member(b"x", name=b"m", mtime=b"xyz") + END, r"a numeric field of the header at byte 0 is no number"),
    "bad device number": (OK + member(name=b"d", type=b"3", devmajor=b"9") + END, r"header at byte 1024 is no number"),
    "non-ASCII number": (member(b"x", name=b"u", uid=b"\xe9") + END, r"is no number"),
    "bad checksum field": (member(b"x", name=b"c", chksum=b"zz") + END, r"is no number"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_archives_are_invalid_source(name: str) -> None:
    data, message = MALFORMED[name]
    with pytest.raises(InvalidSource, match=r"^test: .*" + message) as e:
        lamina_members(data)
    assert "\n" not in str(e.value)
    with pytest.raises(InvalidSource):
        lamina_members(data, Trickle, piece=3)


def test_names_in_messages_are_shown_safely() -> None:
    with pytest.raises(InvalidSource, match=r"^test: .*'x\\ny'") as e:
        lamina_members(header(b"x\ny", 1000) + b"short")
    assert "\n" not in str(e.value)
