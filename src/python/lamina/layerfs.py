"""Reading a layer's tar headers as a stream: entries, whiteouts and hard links, never the file data."""
from __future__ import annotations

import posixpath
import tarfile
from dataclasses import dataclass
from typing import Iterator

from lamina.errors import InvalidSource, UnsafeArchive
from lamina.image import Layer

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True)
class Entry:
    path: str  # normalized, relative, no leading './'
    kind: str  # 'file', 'dir', 'symlink', 'hardlink', 'other'
    size: int
    mode: int
    uid: int
    gid: int
    linkname: str = ""

    @property
    def is_whiteout(self) -> bool:
        return posixpath.basename(self.path).startswith(WHITEOUT_PREFIX)

    @property
    def is_opaque(self) -> bool:
        return posixpath.basename(self.path) == OPAQUE

    @property
    def whiteout_target(self) -> str:
        """The path a whiteout removes ('' for an opaque marker)."""
        base = posixpath.basename(self.path)
        if base == OPAQUE:
            return ""
        return posixpath.join(posixpath.dirname(self.path), base[len(WHITEOUT_PREFIX):])


def normalize(name: str, what: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"{what}: entry {name!r} escapes the root with '..'")
    return "/".join(parts)


def kind_of(info: tarfile.TarInfo) -> str:
    """'file', 'dir', 'symlink', 'hardlink' or 'other'."""
    if info.isreg():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hardlink"
    return "other"


def entries(layer: Layer, what: str = "") -> Iterator[Entry]:
    """Every entry of the layer in tar order; reads the blob once, to the end (so it is verified)."""
    what = what or f"layer {layer.descriptor.digest}"
    with layer.open_uncompressed() as stream:
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tf:
                for info in tf:
                    linkname = info.linkname
                    if info.islnk():
                        linkname = normalize(linkname, what)
                    yield Entry(normalize(info.name, what), kind_of(info), info.size, info.mode,
                                info.uid, info.gid, linkname)
        except tarfile.TarError as e:
            raise InvalidSource(f"{what}: not a readable tar layer ({e})") from e
        except EOFError as e:
            raise InvalidSource(f"{what}: truncated layer") from e
        stream.read()  # the tar's trailing padding, so the digest check sees every byte
