"""The reference for lamina.tarread: what Python's tarfile reads from the same bytes.

`tarfile_members` reads an archive as layertar.walk once did (stream mode, utf-8 with
surrogateescape), `lamina_members` reads it with lamina's reader; differential tests and the
layer_tar fuzz target compare the two wherever both accept the bytes.
"""
from __future__ import annotations

import io
import tarfile
from typing import IO, Callable, Optional

from lamina.tarread import Member, members

Read = list[tuple[Member, Optional[bytes]]]


def kind_of(info: tarfile.TarInfo) -> str:
    """'file', 'dir', 'symlink', 'hardlink' or 'other', as layertar told them from a TarInfo."""
    if info.isreg():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hardlink"
    return "other"


def tarfile_members(data: bytes) -> Read:
    """Each member as tarfile reads it, with a regular file's whole content. Raises what tarfile raises."""
    out: Read = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|", encoding="utf-8", errors="surrogateescape") as tf:
        for info in tf:
            kind = kind_of(info)
            content = None
            if kind == "file":
                f = tf.extractfile(info)
                assert f is not None
                content = f.read()
            out.append((Member(info.name, kind, info.size, info.mode, info.uid, info.gid, info.linkname), content))
    return out


def lamina_members(data: bytes, stream: Callable[[bytes], IO[bytes]] = io.BytesIO, piece: int = -1) -> Read:
    """Each member as lamina.tarread reads it, with a regular file's whole content (read in
    `piece`-byte reads when given). Checks that the whole stream was read."""
    out: Read = []
    f = stream(data)
    for member, content in members(f, "test"):
        data_read = None
        if content is not None:
            if piece > 0:
                parts = []
                while True:
                    part = content.read(piece)
                    if not part:
                        break
                    parts.append(part)
                data_read = b"".join(parts)
            else:
                data_read = content.read()
        out.append((member, data_read))
    assert not f.read(1), "the stream was not read to its end"
    return out


class Trickle(io.RawIOBase):
    """A stream of `data` that gives at most `most` bytes per read (as a raw stream may)."""

    def __init__(self, data: bytes, most: int = 7) -> None:
        super().__init__()
        self._data = io.BytesIO(data)
        self._most = most

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
        data = self._data.read(min(len(buffer), self._most))
        buffer[:len(data)] = data
        return len(data)
