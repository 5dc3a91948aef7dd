"""A lean streaming reader of tar archives: each member's header and, for a regular file, its data.

Written for `layertar.walk`, which used Python's `tarfile` in stream mode: that builds a TarInfo
per member, parses PAX headers into dicts, and reads data through several layers of file objects,
and on a big layer cost several times the time of hashing the layer. This reader reads the stream
in pieces of `blobs.CHUNK`, parses each 512-byte header in place and hands a regular file's data
to its caller as a small file object; it keeps only one piece of the stream, and at most
`EXTENDED_LIMIT` bytes of each extended header, at a time.

What it reads, and what it reports for it, is what `tarfile` (Python 3.9, encoding utf-8 with
surrogateescape) reports for the fields a `Member` has, so that walk's entries do not change:

- ustar/POSIX headers (the 155-byte prefix is joined to the name whenever it is not empty, as
  tarfile does whatever the magic), old v7 headers (a '\\0' typeflag whose name ends in '/' is a
  directory) and GNU headers: `L` long names, `K` long link names, base-256 numeric fields (a
  leading 0x80 or 0xff byte).
- Numeric fields are octal text up to the first NUL, surrounding whitespace allowed, as Python's
  `int(text.strip() or "0", 8)` reads it; every numeric field of every header (mtime and device
  numbers too) must read, or the header is refused, as tarfile refuses it.
- The checksum: the stored value must equal the unsigned or the signed byte sum of the header.
- PAX extended (`x`, and Solaris `X`) and global (`g`) headers: records "LEN KEY=VALUE\\n", keys
  and values decoded as UTF-8 with surrogateescape. `path`, `linkpath`, `size`, `uid` and `gid`
  are used (a number that does not read is 0, as tarfile makes it); other keys are ignored. A
  global header's values apply to every member after it, and an extended header carries the
  global values in force when it was read; when several extended headers precede a member, the
  first one read wins for each field it sets (tarfile applies them innermost first, so the
  outermost's value stays), then the global values, then the member's own header.
- Typeflags '0', '\\0', '7' are regular files ('file', with data), '1' hard links, '2' symbolic
  links, '5' directories; '3', '4', '6' (devices, fifos) are 'other' and, as in tarfile, have no
  data blocks read after them, whatever their size field says; every other typeflag ('M', 'V',
  'D', vendor types) is 'other' and its `size` bytes of data are skipped. The size reported is
  the header's (or PAX) size for every kind.
- The archive ends at the first all-zero block, or where the stream ends at a header's boundary;
  the stream is then read to its end (the caller's digest check depends on that).

Where tarfile is lax this reader refuses, with `InvalidSource` naming `what`: tarfile takes a
header that does not read (bad checksum, a partial block) after the first member as the end of
the archive; here it is an error, as in Go's archive/tar, which container runtimes use. Also
refused: a negative size; an extended header larger than `EXTENDED_LIMIT`, not followed by a
member, or whose padding is not zeros; a PAX record whose length does not match its text; GNU
sparse files ('S', or PAX `GNU.sparse.*` keys: tarfile would expand their holes, container
layers do not hold them); a global PAX `size` (tarfile would report it without skipping by it).
"""
from __future__ import annotations

import struct
import zlib
from typing import IO, Iterator, NamedTuple, Optional

from lamina.blobs import CHUNK
from lamina.errors import InvalidSource, shown

BLOCK = 512
EXTENDED_LIMIT = 1 << 20  # the largest long name, long link name or PAX header read

# name mode uid gid size mtime chksum typeflag linkname magic version uname gname devmajor devminor prefix
_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s")
_ZERO = bytes(BLOCK)
_HIGH = bytes(range(0x80, 0x100))

_REGULAR = (b"0", b"\0", b"7")
_KIND = {b"0": "file", b"\0": "file", b"7": "file", b"1": "hardlink", b"2": "symlink", b"5": "dir"}
_NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")  # types tarfile reads no data blocks after
_PAX = (b"x", b"X", b"g")
_PAX_FIELDS = ("path", "linkpath", "size", "uid", "gid")


class Member(NamedTuple):
    name: str  # as stored (prefix joined, long name or PAX path applied), not normalized
    kind: str  # 'file', 'dir', 'symlink', 'hardlink' or 'other'
    size: int
    mode: int
    uid: int
    gid: int
    linkname: str


class Content:
    """A regular file's data, readable once while the reader is at its member: `read(n)` gives at
    most what is left of it; a stream that ends before the data does is InvalidSource. (A plain
    class, not an io.RawIOBase: one is made per file, and that base costs more than the rest.)"""

    __slots__ = ("_source", "left", "_what", "_name")

    def __init__(self, source: "_Input", size: int, what: str, name: str) -> None:
        self._source = source
        self.left = size
        self._what = what
        self._name = name

    def readable(self) -> bool:
        return True

    def read(self, n: Optional[int] = -1) -> bytes:
        left = self.left
        if n is None or n < 0 or n > left:
            n = left
        if n == 0:
            return b""
        data = self._source.read(n)
        if len(data) != n:
            raise InvalidSource(f"{self._what}: truncated layer (it ends inside the data of {shown(self._name)})")
        self.left = left - n
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class _Input:
    """The stream, read in pieces of CHUNK bytes (one held at a time); `offset` counts bytes consumed."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._buf = b""
        self._pos = 0
        self._base = 0  # the stream offset of _buf[0]

    @property
    def offset(self) -> int:
        return self._base + self._pos

    def read(self, n: int) -> bytes:
        """The next `n` bytes; fewer only where the stream ends."""
        pos = self._pos
        end = pos + n
        if end <= len(self._buf):
            self._pos = end
            return self._buf[pos:end]
        parts = [self._buf[pos:]]
        have = len(parts[0])
        self._drop()
        while have < n:
            want = n - have
            if want >= CHUNK:  # big reads go past the buffer, a CHUNK at a time (`n` may be absurd)
                data = self._stream.read(CHUNK) or b""
                self._base += len(data)
            else:
                data = self._stream.read(CHUNK) or b""
                self._buf = data
                self._pos = min(want, len(data))
                data = data[:self._pos]
            if not data:
                break
            parts.append(data)
            have += len(data)
        return b"".join(parts)

    def skip(self, n: int) -> bool:
        """Pass over `n` bytes (read in pieces, never held); False if the stream ends first."""
        if self._pos + n <= len(self._buf):
            self._pos += n
            return True
        n -= len(self._buf) - self._pos
        self._drop()
        while n > 0:
            data = self._stream.read(CHUNK) or b""
            if not data:
                return False
            if len(data) > n:
                self._buf, self._pos = data, n
                return True
            self._base += len(data)
            n -= len(data)
        return True

    def drain(self) -> None:
        """Read the stream to its end."""
        self._drop()
        while self._stream.read(CHUNK):
            pass

    def _drop(self) -> None:
        self._base += len(self._buf)
        self._buf = b""
        self._pos = 0


def members(stream: IO[bytes], what: str) -> Iterator[tuple[Member, Optional[Content]]]:
    """Each member of the tar archive `stream`, with its data (a `Content`) for a regular file, else None.

    The data is readable only until the iteration moves on; whatever of it is left unread is then
    skipped. After the last member the stream is read to its end. Errors are InvalidSource (the
    stream's own errors pass through)."""
    source = _Input(stream)
    pax_global: dict[str, str] = {}
    first = True
    while True:
        member, skip = _next(source, pax_global, what, first)
        if member is None:
            break
        first = False
        if member.kind == "file":
            content = Content(source, member.size, what, member.name)
            yield member, content
            skip = content.left + (-member.size % BLOCK)
            content.left = 0  # a caller keeping it reads nothing more
        else:
            yield member, None
        if skip and not source.skip(skip):
            raise InvalidSource(f"{what}: truncated layer (it ends inside the data of {shown(member.name)})")
    source.drain()


def _next(source: _Input, pax_global: dict[str, str], what: str, first: bool) -> tuple[Optional[Member], int]:
    """The next member and the bytes of data after its header to skip when it is no regular
    file; (None, 0) at the end of the archive. Reads the extended headers before it."""
    override: dict[str, object] = {}  # fields set by the extended headers read so far: the first one read wins
    extended = False
    while True:
        at = source.offset
        block = source.read(BLOCK)
        if len(block) != BLOCK:
            if block or extended:
                raise InvalidSource(f"{what}: truncated layer (it ends inside the header at byte {at})")
            if first:
                raise InvalidSource(f"{what}: not a readable tar layer (empty file)")
            return None, 0  # no end-of-archive blocks: tarfile takes the stream's end for one
        if block == _ZERO:
            if extended:
                raise _bad(what, f"the extended header before byte {at} has no member after it")
            return None, 0
        (name_f, mode_f, uid_f, gid_f, size_f, mtime_f, chksum_f, flag, link_f, _magic, _version, _uname, _gname,
         major_f, minor_f, prefix_f) = _HEADER.unpack_from(block)
        try:
            if not _checksum_ok(block, _number(chksum_f)):
                raise _bad(what, f"bad checksum in the header at byte {at}")
            ids = block[100:124]  # mode, uid, gid: mostly the same few, so remembered
            mode_ids = _IDS.get(ids)
            if mode_ids is None:
                mode_ids = _number(mode_f), _number(uid_f), _number(gid_f)
                _remember(_IDS, ids, mode_ids)
            mode, uid, gid = mode_ids
            size = _number(size_f)
            _number(mtime_f)  # only checked, as tarfile refuses a header where it does not read
            devices = block[329:345]
            if devices not in _DEVICES:  # checked as well
                _number(major_f)
                _number(minor_f)
                _remember(_DEVICES, devices, True)
        except ValueError:
            raise _bad(what, f"a numeric field of the header at byte {at} is no number") from None
        if size < 0:
            raise _bad(what, f"negative size in the header at byte {at}")

        if flag == b"L" or flag == b"K" or flag in _PAX:
            data = _extended_data(source, size, at, what)
            extended = True
            if flag == b"L":
                override.setdefault("path", _text(data))
            elif flag == b"K":
                override.setdefault("linkpath", _text(data))
            elif flag == b"g":
                for key, value in _pax_records(data, at, what):
                    if key == "size":
                        raise _bad(what, f"the global pax header at byte {at} sets a size")
                    pax_global[key] = value
            else:
                fields = dict(pax_global)
                fields.update(_pax_records(data, at, what))
                for key, value in fields.items():
                    override.setdefault(key, _pax_value(key, value))
            continue

        name = _text(name_f)
        if flag == b"S":
            raise _bad(what, f"{shown(name)} is a GNU sparse file, which lamina does not read")
        if flag == b"\0" and name.endswith("/"):
            flag = b"5"  # an old v7 directory
        if flag == b"5":
            name = name.rstrip("/")  # as tarfile has it (the prefix's own slashes stay)
        prefix = _text(prefix_f)
        if prefix:
            name = prefix + "/" + name
        linkname = _text(link_f)
        if pax_global:  # tarfile patches every member with the global values, then with its extended headers
            for key, value in pax_global.items():
                override.setdefault(key, _pax_value(key, value))
        if override:
            name = override.get("path", name)  # type: ignore[assignment]
            linkname = override.get("linkpath", linkname)  # type: ignore[assignment]
            size = override.get("size", size)  # type: ignore[assignment]
            uid = override.get("uid", uid)  # type: ignore[assignment]
            gid = override.get("gid", gid)  # type: ignore[assignment]
            if size < 0:
                raise _bad(what, f"negative size in the pax header of {shown(name)}")
        kind = _KIND.get(flag, "other")
        skip = 0 if kind == "file" or flag in _NO_DATA else size + (-size % BLOCK)
        return Member(name, kind, size, mode, uid, gid, linkname), skip


# Numeric fields already read, by their bytes: a layer's headers repeat a few modes, owners and
# device fields. Shared by every reader (a value depends on the bytes alone; dict operations are
# atomic), and bounded: a full cache starts over.
_IDS: dict[bytes, tuple[int, int, int]] = {}
_DEVICES: dict[bytes, bool] = {}
_REMEMBERED = 4096


def _remember(cache: dict, key: bytes, value: object) -> None:  # type: ignore[type-arg]
    if len(cache) >= _REMEMBERED:
        cache.clear()
    cache[key] = value


def _bad(what: str, why: str) -> InvalidSource:
    return InvalidSource(f"{what}: not a readable tar layer ({why})")


def _number(field: bytes) -> int:
    """A numeric header field: base-256 after a 0x80 (positive) or 0xff (negative) byte, else
    octal text up to the first NUL. Raises ValueError when it is neither."""
    lead = field[0]
    if lead == 0x80 or lead == 0xFF:
        n = int.from_bytes(field[1:], "big")
        return n - (1 << (8 * (len(field) - 1))) if lead == 0xFF else n
    nul = field.find(0)
    if nul >= 0:
        if nul == 0:
            return 0  # empty (as GNU tar leaves the device numbers of a file)
        field = field[:nul]
    try:
        return int(field, 8)  # the usual digits; int() of the bytes takes what int() of the text takes,
    except ValueError:        # but for the whitespace str.strip() knows beyond ASCII's and all-blank fields
        return int(field.decode("ascii").strip() or "0", 8)


def _checksum_ok(block: bytes, stored: int) -> bool:
    """Whether `stored` is the header's unsigned or signed byte sum, its checksum field counted as spaces."""
    # Adler-32's low half is 1 + the byte sum modulo 65521: over 256 bytes (at most 65280) that is the sum itself.
    total = (zlib.adler32(block[:256]) & 0xFFFF) + (zlib.adler32(block[256:]) & 0xFFFF) - 2
    unsigned = total - sum(block[148:156]) + 8 * 0x20
    if stored == unsigned:
        return True
    rest = block[:148] + block[156:]
    return stored == unsigned - 256 * (len(rest) - len(rest.translate(None, _HIGH)))


def _text(field: bytes) -> str:
    if not field or not field[0]:
        return ""
    nul = field.find(0)
    if nul >= 0:
        field = field[:nul]
    return field.decode("utf-8", "surrogateescape")


def _extended_data(source: _Input, size: int, at: int, what: str) -> bytes:
    """The data of a long-name or PAX header (at most EXTENDED_LIMIT bytes), its zero padding read too."""
    if size > EXTENDED_LIMIT:
        raise _bad(what, f"the extended header at byte {at} holds {size} bytes, more than {EXTENDED_LIMIT}")
    data = source.read(size + (-size % BLOCK))
    if len(data) < size + (-size % BLOCK):
        raise InvalidSource(f"{what}: truncated layer (it ends inside the extended header at byte {at})")
    if data.count(0, size) != len(data) - size:
        raise _bad(what, f"the extended header at byte {at} is padded with other bytes than zeros")
    return data[:size]


def _pax_records(data: bytes, at: int, what: str) -> Iterator[tuple[str, str]]:
    """(key, value) of each of the records "LEN KEY=VALUE\\n" that must fill `data`, for the fields
    Member uses; GNU sparse keys are refused."""
    pos = 0
    end = len(data)
    while pos < end:
        space = data.find(b" ", pos, pos + 24)
        digits = data[pos:space]
        if space < 0 or not digits.isdigit():
            raise _bad(what, f"bad record length at byte {pos} of the pax header at byte {at}")
        stop = pos + int(digits)
        equals = data.find(b"=", space + 1, stop)
        if stop > end or equals <= space + 1 or data[stop - 1] != 0x0A:
            raise _bad(what, f"bad record at byte {pos} of the pax header at byte {at}")
        key = data[space + 1:equals].decode("utf-8", "surrogateescape")
        if key.startswith("GNU.sparse."):
            raise _bad(what, f"the pax header at byte {at} describes a GNU sparse file, which lamina does not read")
        if key in _PAX_FIELDS:
            yield key, data[equals + 1:stop - 1].decode("utf-8", "surrogateescape")
        pos = stop


def _pax_value(key: str, value: str) -> object:
    """A PAX value as the Member field it sets: path (trailing '/' removed), linkname, or a number (0 if it does not read)."""
    if key == "path":
        return value.rstrip("/")
    if key == "linkpath":
        return value
    try:
        return int(value)
    except ValueError:
        return 0
