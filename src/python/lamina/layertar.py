"""Walking a layer's tar stream: each entry's header (and, on request, its content) in one bounded pass to the end."""
from __future__ import annotations

import contextlib
import posixpath
import tarfile
from dataclasses import dataclass
from typing import IO, Callable, Iterator, Optional, TypeVar

from lamina.blobs import chunks
from lamina.errors import InvalidSource, UnsafeArchive
from lamina.image import Layer

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One tar header of a layer, as read: size and mode are the header's, for every kind."""

    path: str  # normalized, relative, no leading './' ('' for the root directory itself)
    kind: str  # 'file', 'dir', 'symlink', 'hardlink', 'other'
    size: int
    mode: int
    uid: int
    gid: int
    linkname: str = ""  # a hard link's target normalized as a path; a symlink's as written

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


def walk(layer: Layer, what: str, read: Callable[[Entry, IO[bytes]], T],
         stream: Optional[IO[bytes]] = None) -> Iterator[tuple[Entry, Optional[T]]]:
    """Each entry of the layer in tar order, with `read(entry, content)` for a file (None otherwise).

    `read` runs before the walk moves on, as the content is only readable then; it reads in
    chunks. The layer is read once, to its very end (so its digest is checked), in chunks: the
    bytes after the last header, however many, are never held at once. Stop early and the
    layer is left unverified.

    `stream`, when given, is the layer's uncompressed bytes as the caller reads them (e.g. while
    it stores the blob); it is read to its end and left open for the caller.
    """
    with (layer.open_uncompressed() if stream is None else contextlib.nullcontext(stream)) as stream:
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tf:
                for info in tf:
                    entry = _entry(info, what)
                    value = None
                    if entry.kind == "file":
                        f = tf.extractfile(info)
                        if f is None:
                            raise InvalidSource(f"{what}: cannot read {entry.path}")
                        value = read(entry, f)
                    yield entry, value
        except tarfile.TarError as e:
            raise InvalidSource(f"{what}: not a readable tar layer ({e})") from e
        except EOFError as e:
            raise InvalidSource(f"{what}: truncated layer") from e
        for _ in chunks(stream):  # end-of-archive blocks and whatever follows them
            pass


def entries(layer: Layer, what: str = "") -> Iterator[Entry]:
    """Every entry of the layer in tar order, headers only (see walk)."""
    for entry, _ in walk(layer, what or f"layer {layer.descriptor.digest}", _skip):
        yield entry


def _skip(entry: Entry, content: IO[bytes]) -> None:
    return None  # tarfile skips the unread content itself, in blocks, on the next header


def _entry(info: tarfile.TarInfo, what: str) -> Entry:
    path = normalize(info.name, what)
    kind = kind_of(info)
    linkname = normalize(info.linkname, what) if kind == "hardlink" else info.linkname
    return Entry(path, kind, info.size, info.mode, info.uid, info.gid, linkname)
