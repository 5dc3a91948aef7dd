"""Walking a layer's tar stream: each entry's header (and, on request, its content) in one bounded pass to the end."""
from __future__ import annotations

import contextlib
import posixpath
from dataclasses import dataclass
from typing import IO, Callable, Iterator, Optional, TypeVar

from lamina.errors import InvalidSource, UnsafeArchive
from lamina.image import Layer
from lamina.tarread import Member, members

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
            for member, content in members(stream, what):  # reads the stream to its end after the last one
                entry = _entry(member, what)
                yield entry, (read(entry, content) if content is not None else None)
        except EOFError as e:  # a decompressor's
            raise InvalidSource(f"{what}: truncated layer") from e


def entries(layer: Layer, what: str = "") -> Iterator[Entry]:
    """Every entry of the layer in tar order, headers only (see walk)."""
    for entry, _ in walk(layer, what or f"layer {layer.descriptor.digest}", _skip):
        yield entry


def _skip(entry: Entry, content: IO[bytes]) -> None:
    return None  # the reader skips the unread content itself, on the next member


def _entry(m: Member, what: str) -> Entry:
    linkname = normalize(m.linkname, what) if m.kind == "hardlink" else m.linkname
    return Entry(normalize(m.name, what), m.kind, m.size, m.mode, m.uid, m.gid, linkname)
