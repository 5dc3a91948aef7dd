"""The Image and Layer nouns, for every image, read or composed: metadata plus lazy, verified openers
for blob bytes (base layer first), and the one place an image's OCI manifest is serialised."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, BinaryIO, Mapping, Optional

from lamina.blobs import Opener, decompressed, verified
from lamina.errors import InvalidSource
from lamina.model import (
    OCI_CONFIG,
    OCI_MANIFEST,
    Descriptor,
    Platform,
    canonical_json,
    check_digest,
    expect_dict,
    layer_compression,
    parse_json,
)


@dataclass(frozen=True)
class Taken:
    """How a composition took a layer: by which selector, for which target, from what stack."""

    selector: str  # the selector's text; "base" for a base image's layers, "files" for a new files layer
    target: str = ""  # the build target that asked for it, if any (named in errors and the audit trail)
    platform: Optional[Platform] = None  # its source image's platform, checked against the composed image's
    # diff_ids of the layers below it in its source image (None: not known). The composed image
    # records which of its own layers below this one are among them, so that a check of the
    # composed image alone (`lamina layers --conflicts`) knows what the layer was built on.
    below_diff_ids: Optional[tuple[str, ...]] = None


@dataclass(frozen=True)
class Layer:
    """One layer of an image. `open_blob` yields the stored (maybe compressed) bytes, verified.

    Besides its metadata, a layer carries what is known about it: the image it was read from
    (`source`), who already checked its bytes against its digest and diff_id (`verified_by`, ""
    when nobody has: every consumer then checks them as it reads), and, in a composed image, how
    the composition took it (`taken`)."""

    descriptor: Descriptor
    diff_id: str
    index: int  # position in its source image, 0 = base; -1 for a layer lamina made
    history: tuple[Mapping[str, Any], ...]  # history entries of this layer (empty ones before it included)
    opener: Optional[Opener] = field(default=None, compare=False, repr=False)
    path: Optional[str] = field(default=None, compare=False, repr=False)  # a file holding exactly the blob
    source: str = field(default="", compare=False)  # the image it came from, as the user named it
    verified_by: str = field(default="", compare=False)  # e.g. "lamina extract"; "" = not yet verified
    taken: Optional[Taken] = field(default=None, compare=False)
    # Registry manifests (docker://HOST/REPO@sha256:...) of its source image as the engine recorded
    # them (RepoDigests): where the layer is kept compressed, for a push to mount or fetch from.
    copies: tuple[str, ...] = field(default=(), compare=False)

    @property
    def created_by(self) -> str:
        for entry in reversed(self.history):
            if not entry.get("empty_layer"):
                return str(entry.get("created_by") or "")
        return ""

    @property
    def compression(self) -> str:
        return layer_compression(self.descriptor.media_type)

    @property
    def what(self) -> str:
        """How errors name the layer: its source image, its index there and its digest."""
        where = f"{self.source}: " if self.source else ""
        if self.index < 0:  # a layer lamina made, of no source image
            return f"{where}layer {self.descriptor.digest}"
        return f"{where}layer {self.index} ({self.descriptor.digest})"

    @property
    def has_bytes(self) -> bool:
        return self.opener is not None or self.path is not None

    def opener_or_file(self) -> Optional[Opener]:
        """How to read the stored bytes unverified (the caller checks them): the opener, else the file."""
        if self.opener is not None:
            return self.opener
        if self.path is not None:
            path = self.path
            return lambda: open(path, "rb")
        return None

    def open_blob(self, what: str = "") -> BinaryIO:
        """The blob's bytes; reading them to the end checks digest and size."""
        opener = self.opener_or_file()
        if opener is None:
            raise InvalidSource(f"layer {self.descriptor.digest} has no bytes in this source")
        return verified(opener, self.descriptor.digest, self.descriptor.size, what or self.what)

    def open_uncompressed(self) -> BinaryIO:
        return decompressed(self.open_blob(), self.compression)

    def taken_from(self, image: "Image", selector: str, target: str = "") -> "Layer":
        """This layer (of `image`) as a composition takes it by `selector` for `target`."""
        taken = Taken(selector, target, image.platform, tuple(image.diff_ids[: self.index]) if self.index >= 0 else None)
        return dataclasses.replace(self, taken=taken)


def with_copies(image: "Image", copies: tuple[str, ...]) -> "Image":
    """`image` with `copies` (registry manifests of the same image) recorded on each of its layers."""
    if not copies:
        return image
    return dataclasses.replace(image, layers=tuple(dataclasses.replace(l, copies=copies) for l in image.layers))


def manifest_bytes(config: Descriptor, layers: tuple[Descriptor, ...]) -> bytes:
    """An OCI image manifest in lamina's canonical form: the only place one is serialised.

    Layer media types are mapped to their OCI names (same bytes, same digests; a nondistributable
    layer stays one); annotations and urls are kept."""
    return canonical_json({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": Descriptor(OCI_CONFIG, config.digest, config.size).to_json(),
        "layers": [d.as_oci_layer().to_json() for d in layers],
    })


@dataclass(frozen=True)
class Image:
    """An image, read or composed: its config (bytes and parsed) and its layers, base first.

    Its manifest is derived: the OCI manifest of its config and layer descriptors, which is what
    every writer, push and load sends, whether the image was read from a source or composed."""

    source: str  # the reference it was read from as the user wrote it, or the composed image's name
    config_bytes: bytes
    config_descriptor: Descriptor
    layers: tuple[Layer, ...]
    manifest_media_type: str = ""  # as its source stored it ("" for a composed image)
    tags: tuple[str, ...] = ()

    @cached_property
    def config(self) -> dict:
        return expect_dict(parse_json(self.config_bytes, f"{self.source}: config"), f"{self.source}: config")

    @property
    def platform(self) -> Platform:
        return Platform.of_config(self.config)

    @property
    def diff_ids(self) -> tuple[str, ...]:
        return tuple(layer.diff_id for layer in self.layers)

    @cached_property
    def manifest_bytes(self) -> bytes:
        return manifest_bytes(self.config_descriptor, tuple(l.descriptor for l in self.layers))

    @property
    def manifest_descriptor(self) -> Descriptor:
        return Descriptor.of(OCI_MANIFEST, self.manifest_bytes)

    def unique_layers(self) -> tuple[Layer, ...]:
        """Each blob once (an image may list one layer twice), in stack order."""
        seen: set[str] = set()
        out = []
        for layer in self.layers:
            if layer.descriptor.digest not in seen:
                seen.add(layer.descriptor.digest)
                out.append(layer)
        return tuple(out)


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
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list):
        raise InvalidSource(f"{where}: config has no rootfs.diff_ids")
    return [check_digest(d, f"{where}: rootfs.diff_ids") for d in rootfs["diff_ids"]]
