"""The filesystem of the layers a new files layer goes on: from their `lamina scan` indexes, or
from a walk of their tar headers (no content hashed) when no index was made."""
from __future__ import annotations

from typing import Sequence

from lamina.analyze.index import IndexEntry, LayerIndex, read_index
from lamina.analyze.stackfs import FileSystem, apply
from lamina.image import Layer
from lamina.layertar import entries


def from_indexes(paths: Sequence[str]) -> FileSystem:
    """The filesystem the indexes at `paths` (base first, each of one or more layers) make."""
    return apply([layer for path in paths for layer in read_index(path)]).fs


def header_index(layer: Layer) -> LayerIndex:
    """An index of the layer's entries as its headers give them (path, kind, mode, owner, link),
    without content hashes. Reads the layer once, to its end, so its digest is checked."""
    d = layer.descriptor
    found = tuple(IndexEntry(e.path, e.kind, e.mode & 0o7777, e.uid, e.gid, e.size if e.kind == "file" else 0,
                             e.linkname)
                  for e in entries(layer, layer.what) if e.path)
    return LayerIndex(layer.source, layer.index, d.digest, layer.diff_id, d.media_type, d.size, layer.created_by,
                      "", (), (), found)


def from_layers(layers: Sequence[Layer]) -> FileSystem:
    """The filesystem `layers` (base first) make, from a walk of their headers."""
    return apply([header_index(layer) for layer in layers]).fs
