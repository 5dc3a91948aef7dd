"""Scanning layers into indexes: one streaming pass per layer, hashing file content and reading ELF heads."""
from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Optional, Sequence

from lamina.analyze.index import IndexEntry, LayerIndex
from lamina.blobs import CHUNK
from lamina.elf import MAGIC, ElfInfo, ElfScanner
from lamina.errors import InvalidSource
from lamina.extract import read_selection
from lamina.image import Image, Layer
from lamina.layertar import walk
from lamina.model import ANN_SOURCE, Platform

if TYPE_CHECKING:
    from lamina.registry.transport import RegistryOptions  # pants: no-infer-dep

# Small loader configuration files whose text goes into the index (glob, on normalized paths).
TEXT_FILES = ("etc/ld.so.conf", "etc/ld.so.conf.d/*.conf", "etc/ld-musl-*.path")
TEXT_LIMIT = 64 << 10
SHEBANG_LIMIT = 256  # bytes of a `#!` line kept, as the kernel's BINPRM_BUF_SIZE
_LAMINA_COMMENT = re.compile(r"^lamina: layer \S+ from (.*?) \((.*)\)(?:; built on (no layer here|layers [0-9,-]+))?$")


@dataclass(frozen=True)
class ScanResult:
    layers: tuple[LayerIndex, ...]
    skipped: tuple[int, ...]  # source indices of selected layers whose blob the source does not hold


def _wants_text(path: str, size: int) -> bool:
    return size <= TEXT_LIMIT and any(fnmatch.fnmatchcase(path, g) for g in TEXT_FILES)


def _shebang(head: bytes) -> str:
    """A file's first line when it starts with `#!` (at most SHEBANG_LIMIT bytes), else ""."""
    if head[:2] != b"#!":
        return ""
    return head[:SHEBANG_LIMIT].split(b"\n", 1)[0].decode("utf-8", "replace")


def _content(f: IO[bytes], want_text: bool) -> tuple[str, Optional[ElfInfo], Optional[str], str]:
    """(sha256 hex, ELF facts, text, `#!` line) of one file's content, read in chunks."""
    h = hashlib.sha256()
    scanner: Optional[ElfScanner] = None
    text = bytearray() if want_text else None
    shebang = ""
    first = True
    while True:
        data = f.read(CHUNK)
        if not data:
            break
        h.update(data)
        if first:
            first = False
            if data[:4] == MAGIC:
                scanner = ElfScanner()
            shebang = _shebang(data)
        if scanner is not None:
            scanner.feed(data)
        if text is not None:
            text += data
    elf = scanner.result() if scanner is not None else None
    return h.hexdigest(), elf, text.decode("utf-8", "replace") if text is not None else None, shebang


@dataclass(frozen=True)
class LayerContent:
    """What a layer's bytes say, before it is known which layer of which image they are: its
    entries and texts (the index's), for `index_of`."""

    entries: tuple[IndexEntry, ...]
    texts: tuple[tuple[str, str], ...]


def scan_content(stream: IO[bytes], what: str) -> LayerContent:
    """The entries and texts of an uncompressed layer tar read from `stream`, to its end."""
    entries: list[IndexEntry] = []
    texts: dict[str, str] = {}
    for e, content in walk(None, what, lambda e, f: _content(f, _wants_text(e.path, e.size)), stream):  # type: ignore[arg-type]
        if not e.path:
            continue  # the root directory itself
        sha, elf, text, shebang = content if content is not None else ("", None, None, "")
        if text is not None:
            texts[e.path] = text
        else:
            texts.pop(e.path, None)  # a later entry of the same path replaces the earlier one
        entries.append(IndexEntry(e.path, e.kind, e.mode & 0o7777, e.uid, e.gid,
                                  e.size if e.kind == "file" else 0, e.linkname, sha, elf, shebang))
    return LayerContent(tuple(entries), tuple(sorted(texts.items())))


def index_of(layer: Layer, source: str, below: Sequence[Layer], platform: str, content: LayerContent) -> LayerIndex:
    """The index of `layer` (of `source`, on `below`), whose bytes say `content`."""
    return LayerIndex(
        source=source,
        index=layer.index,
        digest=layer.descriptor.digest,
        diff_id=layer.diff_id,
        media_type=layer.descriptor.media_type,
        size=layer.descriptor.size,
        created_by=layer.created_by,
        platform=platform,
        below=tuple(l.descriptor.digest for l in below),
        below_diff_ids=tuple(l.diff_id for l in below),
        entries=content.entries,
        texts=content.texts,
    )


def scan_layer(layer: Layer, source: str, below: Sequence[Layer], platform: str,
               stream: Optional[IO[bytes]] = None) -> LayerIndex:
    """The index of one layer; reads its blob once, to the end (so its digest is checked).

    `stream`: the layer's uncompressed bytes as a caller that stores the blob reads them (see
    extract), so that storing and indexing are one pass."""
    what = f"{source}: layer {layer.index} ({layer.descriptor.digest})"
    if stream is None:
        with layer.open_uncompressed() as opened:
            return index_of(layer, source, below, platform, scan_content(opened, what))
    return index_of(layer, source, below, platform, scan_content(stream, what))


def scan_source(text: str, selector: Optional[str] = None, name: Optional[str] = None,
                platform: Optional[Platform] = None, registry: Optional[RegistryOptions] = None) -> ScanResult:
    """Indexes of a source's layers: `selector`'s, else a bundle's selected ones, else all of them.

    Layers whose blob the source does not hold (the unselected layers of a bundle) are skipped.
    The recorded source name is `name`, else a bundle's recorded source, else `text`.
    """
    from lamina.select import parse_selector, select
    from lamina.sources import open_image, parse_source

    path = parse_source(text).path
    selection = read_selection(path) if os.path.isdir(path) else None
    label = name or (selection.source if selection else text)
    image = open_image(text, name=label, platform=platform, registry=registry)
    if selector is not None:
        layers = select(image, parse_selector(selector))
    elif selection is not None:
        wrong = [i for i in selection.indices if not 0 <= i < len(image.layers)]
        if wrong:
            raise InvalidSource(f"{path}: lamina-selection.json names layer {wrong[0]}, but the image has "
                                f"{len(image.layers)}; extract the bundle again")
        layers = tuple(image.layers[i] for i in selection.indices)
    else:
        layers = image.layers
    present = tuple(l for l in layers if l.opener is not None)
    skipped = tuple(l.index for l in layers if l.opener is None)
    found = str(image.platform)
    return ScanResult(tuple(scan_layer(l, label, image.layers[: l.index], found) for l in present), skipped)


def scan_files_layer(layer: Layer, name: str) -> LayerIndex:
    """The index of an image's files layer, which sits on top of the composed stack: it was built
    knowing every layer below it, so what it replaces is not a conflict."""
    import dataclasses

    return dataclasses.replace(scan_layer(layer, name, (), ""), on_top=True)


def _added_from(layer: Layer) -> tuple[Optional[str], Optional[frozenset[int]]]:
    """For a layer lamina added to a composed image: its recorded source, and the positions of the
    composed image's layers below it that it was built on, if recorded. (None, None) otherwise."""
    annotations = dict(layer.descriptor.annotations)
    source = annotations.get(ANN_SOURCE)
    for entry in reversed(layer.history):
        if not entry.get("empty_layer"):
            m = _LAMINA_COMMENT.match(str(entry.get("comment") or ""))
            if m is None:
                return source, None
            return source or m.group(1), _positions(m.group(3))
    return source, None


def _positions(text: Optional[str]) -> Optional[frozenset[int]]:
    if text is None:
        return None
    out: set[int] = set()
    for part in text[len("layers "):].split(",") if text.startswith("layers ") else ():
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return frozenset(out)


def scan_image(image: Image) -> tuple[LayerIndex, ...]:
    """Indexes of every layer of an image, for checking the image's own stack.

    A layer's known-below layers are all those under it, except for a layer lamina added to a
    composed image: those lamina recorded it was built on in its source image, or, where that
    is not recorded, the layers under it that lamina added from the same source (anything else
    it overrides or removes is reported).
    """
    platform = str(image.platform)
    added = [_added_from(l) for l in image.layers]
    out = []
    for i, layer in enumerate(image.layers):
        below = image.layers[:i]
        origin, built_on = added[i]
        if built_on is not None:
            below = tuple(l for j, l in enumerate(below) if j in built_on)
        elif origin is not None:
            below = tuple(l for j, l in enumerate(below) if added[j][0] == origin)
        out.append(scan_layer(layer, image.source, below, platform))
    return tuple(out)
