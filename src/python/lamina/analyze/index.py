"""The layer index: what one layer holds (entries, content hashes, ELF facts) and where it sat, as JSON."""
from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from lamina.elf import ElfInfo
from lamina.errors import InvalidIndex
from lamina.layertar import OPAQUE, WHITEOUT_PREFIX

FORMAT = "lamina.layer-index/1"
KINDS = ("file", "dir", "symlink", "hardlink", "other")


@dataclass(frozen=True)
class IndexEntry:
    """One tar entry of a layer; `sha256` (hex) for regular files, `elf` for ELF files, `shebang`
    (the first line, bounded) for files that start with `#!`."""

    path: str  # normalized, relative, no leading '/'
    kind: str  # one of KINDS
    mode: int  # permission bits (& 0o7777)
    uid: int
    gid: int
    size: int = 0
    linkname: str = ""  # symlink text as stored; hard link target normalized
    sha256: str = ""
    elf: Optional[ElfInfo] = None
    shebang: str = ""

    @property
    def is_opaque(self) -> bool:
        return posixpath.basename(self.path) == OPAQUE

    @property
    def is_whiteout(self) -> bool:
        """A `.wh.NAME` marker or an opaque marker: it removes, it provides nothing."""
        return posixpath.basename(self.path).startswith(WHITEOUT_PREFIX)

    @property
    def whiteout_target(self) -> str:
        """What the marker removes: NAME for `.wh.NAME`, the directory for an opaque marker."""
        head, base = posixpath.split(self.path)
        if base == OPAQUE:
            return head
        return posixpath.join(head, base[len(WHITEOUT_PREFIX):])

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "kind": self.kind, "mode": self.mode, "uid": self.uid,
                               "gid": self.gid}
        if self.kind == "file":
            out["size"] = self.size
            out["sha256"] = self.sha256
        if self.linkname:
            out["linkname"] = self.linkname
        if self.is_opaque:
            out["opaque"] = True
        elif self.is_whiteout:
            out["whiteout"] = self.whiteout_target
        if self.elf is not None:
            out["elf"] = self.elf.to_json()
        if self.shebang:
            out["shebang"] = self.shebang
        return out

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> IndexEntry:
        kind = str(data["kind"])
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        elf = data.get("elf")
        return IndexEntry(str(data["path"]), kind, int(data["mode"]), int(data["uid"]), int(data["gid"]),
                          int(data.get("size", 0)), str(data.get("linkname", "")), str(data.get("sha256", "")),
                          ElfInfo.from_json(elf) if isinstance(elf, dict) else None,
                          str(data.get("shebang", "")))  # absent in indexes made before it was recorded


@dataclass(frozen=True)
class LayerIndex:
    """One layer's index, with its identity and the layers below it in its source image."""

    source: str  # the source image as recorded (a bundle's recorded source, or the reference given)
    index: int  # position in its source image, 0 = base
    digest: str
    diff_id: str
    media_type: str
    size: int
    created_by: str
    platform: str
    below: tuple[str, ...]  # digests of the layers below it in its source image, base first
    below_diff_ids: tuple[str, ...]
    entries: tuple[IndexEntry, ...]  # in tar order
    texts: tuple[tuple[str, str], ...] = ()  # (path, text) of the small loader config files it holds
    # Made for the stack it tops, as the layer of a composed image's own files is (as a Dockerfile's
    # COPY is): it was built on every layer below it.
    on_top: bool = False
    # Whether its entries record `#!` lines (indexes made before they did are still read).
    shebangs: bool = True

    def knows(self, other: LayerIndex) -> bool:
        """True when `other` was below this layer in this layer's source image (it was built on it)."""
        return self.on_top or other.digest in self.below or other.diff_id in self.below_diff_ids

    def describe(self) -> str:
        if self.on_top:  # not from a source image: the source names it ("files of //app:img")
            return f"{self.source} ({self.digest[:19]})"
        return f"{self.source} layer {self.index} ({self.digest[:19]})"

    def to_json(self) -> dict[str, Any]:
        out = {
            "source": self.source,
            "index": self.index,
            "digest": self.digest,
            "diff_id": self.diff_id,
            "media_type": self.media_type,
            "size": self.size,
            "created_by": self.created_by,
            "platform": self.platform,
            "below": list(self.below),
            "below_diff_ids": list(self.below_diff_ids),
            "entries": [e.to_json() for e in self.entries],
            "texts": dict(self.texts),
        }
        if self.on_top:
            out["on_top"] = True
        if self.shebangs:
            out["shebangs"] = True
        return out

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> LayerIndex:
        texts = data.get("texts") or {}
        return LayerIndex(
            source=str(data["source"]),
            index=int(data["index"]),
            digest=str(data["digest"]),
            diff_id=str(data["diff_id"]),
            media_type=str(data.get("media_type", "")),
            size=int(data.get("size", 0)),
            created_by=str(data.get("created_by", "")),
            platform=str(data.get("platform", "")),
            below=tuple(str(d) for d in data.get("below", ())),
            below_diff_ids=tuple(str(d) for d in data.get("below_diff_ids", ())),
            entries=tuple(IndexEntry.from_json(e) for e in data["entries"]),
            texts=tuple(sorted((str(k), str(v)) for k, v in texts.items())),
            on_top=bool(data.get("on_top", False)),
            shebangs=bool(data.get("shebangs", False)),
        )


def dumps(layers: Sequence[LayerIndex]) -> bytes:
    """The index file for `layers` (base first): canonical JSON, so equal inputs give equal bytes."""
    doc = {"format": FORMAT, "layers": [l.to_json() for l in layers]}
    # ASCII with escapes: a name that is not UTF-8 (read with surrogateescape) survives the round trip.
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def write_index(layers: Sequence[LayerIndex], path: str) -> None:
    import os

    tmp = path + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, "wb") as f:
        f.write(dumps(layers))
    os.replace(tmp, path)


def loads(data: bytes, where: str) -> tuple[LayerIndex, ...]:
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise InvalidIndex(f"{where}: not JSON ({e}); make it with `lamina scan`") from e
    except RecursionError:
        raise InvalidIndex(f"{where}: JSON nested too deeply to read; make it with `lamina scan`") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise InvalidIndex(f"{where}: not a layer index (format {found!r}, expected {FORMAT!r}); make it with `lamina scan`")
    try:
        return tuple(LayerIndex.from_json(l) for l in doc["layers"])
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:  # OverflowError: int(1e400)
        raise InvalidIndex(f"{where}: malformed layer index ({type(e).__name__}: {e})") from e


def read_index(path: str) -> tuple[LayerIndex, ...]:
    with open(path, "rb") as f:
        return loads(f.read(), path)
