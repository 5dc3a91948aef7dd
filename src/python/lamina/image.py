"""The Image and Layer nouns: metadata plus lazy, verified openers for blob bytes (base layer first)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, BinaryIO, Mapping, Optional

from lamina.blobs import Opener, decompressed, verified
from lamina.errors import InvalidSource
from lamina.model import Descriptor, Platform, layer_compression, parse_json, expect_dict


@dataclass(frozen=True)
class Layer:
    """One layer of an image. `open_blob` yields the stored (maybe compressed) bytes, verified."""

    descriptor: Descriptor
    diff_id: str
    index: int  # position in its source image, 0 = base
    history: tuple[Mapping[str, Any], ...]  # history entries of this layer (empty ones before it included)
    opener: Optional[Opener] = field(default=None, compare=False, repr=False)
    path: Optional[str] = field(default=None, compare=False, repr=False)  # a file holding exactly the blob

    @property
    def created_by(self) -> str:
        for entry in reversed(self.history):
            if not entry.get("empty_layer"):
                return str(entry.get("created_by") or "")
        return ""

    @property
    def compression(self) -> str:
        return layer_compression(self.descriptor.media_type)

    def open_blob(self, what: str = "") -> BinaryIO:
        """The blob's bytes; reading them to the end checks digest and size."""
        if self.opener is None:
            raise InvalidSource(f"layer {self.descriptor.digest} has no bytes in this source")
        return verified(self.opener, self.descriptor.digest, self.descriptor.size,
                        what or f"layer {self.descriptor.digest}")

    def open_uncompressed(self) -> BinaryIO:
        return decompressed(self.open_blob(), self.compression)


@dataclass(frozen=True)
class Image:
    """An image: its config (bytes and parsed) and its layers, base first."""

    source: str  # the reference it was read from, as the user wrote it
    config_bytes: bytes
    config_descriptor: Descriptor
    layers: tuple[Layer, ...]
    manifest_media_type: str = ""
    tags: tuple[str, ...] = ()

    @property
    def config(self) -> dict:
        return expect_dict(parse_json(self.config_bytes, f"{self.source}: config"), f"{self.source}: config")

    @property
    def platform(self) -> Platform:
        return Platform.of_config(self.config)

    @property
    def diff_ids(self) -> tuple[str, ...]:
        return tuple(layer.diff_id for layer in self.layers)


def layer_history(config: Mapping[str, Any], layer_count: int) -> list[tuple[Mapping[str, Any], ...]]:
    """History entries grouped per layer: each layer gets its own entry and the empty ones before it.

    Empty entries (ENV, CMD, ...) after the last layer are dropped. When the history does not
    have one non-empty entry per layer, every layer gets no history rather than a wrong one.
    """
    history = config.get("history") or []
    if not isinstance(history, list):
        return [()] * layer_count
    groups: list[tuple[Mapping[str, Any], ...]] = []
    pending: list[Mapping[str, Any]] = []
    for entry in history:
        if not isinstance(entry, dict):
            return [()] * layer_count
        pending.append(entry)
        if not entry.get("empty_layer"):
            groups.append(tuple(pending))
            pending = []
    if len(groups) != layer_count:
        return [()] * layer_count
    return groups


def config_diff_ids(config: Mapping[str, Any], where: str) -> list[str]:
    from lamina.model import check_digest

    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list):
        raise InvalidSource(f"{where}: config has no rootfs.diff_ids")
    return [check_digest(d, f"{where}: rootfs.diff_ids") for d in rootfs["diff_ids"]]
