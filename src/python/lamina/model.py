"""Value types of OCI/Docker images: media types, digests, descriptors, platforms, canonical JSON."""
from __future__ import annotations

import hashlib
import json
import platform as _host
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from lamina.errors import InvalidSource

# Media types.
OCI_LAYOUT_VERSION = "1.0.0"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
# Nondistributable ("foreign") layers: their blobs are fetched from the descriptor's urls, and
# registries and tools do not copy them. Their type says so, and lamina keeps it.
OCI_ND_LAYER = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_ND_LAYER_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_ND_LAYER_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
NONDIST_SUFFIX = ".nondistributable"  # an OCI type with this suffix: read as the nondistributable one

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})

# Layer media type -> (compression, OCI equivalent). Same bytes, so the same digest.
_LAYER_TYPES = {
    OCI_LAYER: ("none", OCI_LAYER),
    OCI_LAYER_GZIP: ("gzip", OCI_LAYER_GZIP),
    OCI_LAYER_ZSTD: ("zstd", OCI_LAYER_ZSTD),
    DOCKER_LAYER: ("none", OCI_LAYER),
    DOCKER_LAYER_GZIP: ("gzip", OCI_LAYER_GZIP),
    DOCKER_LAYER_ZSTD: ("zstd", OCI_LAYER_ZSTD),
    OCI_ND_LAYER: ("none", OCI_ND_LAYER),
    OCI_ND_LAYER_GZIP: ("gzip", OCI_ND_LAYER_GZIP),
    OCI_ND_LAYER_ZSTD: ("zstd", OCI_ND_LAYER_ZSTD),
    DOCKER_FOREIGN_LAYER: ("none", OCI_ND_LAYER),
    DOCKER_FOREIGN_LAYER_GZIP: ("gzip", OCI_ND_LAYER_GZIP),
}
_NONDISTRIBUTABLE = {OCI_LAYER: OCI_ND_LAYER, OCI_LAYER_GZIP: OCI_ND_LAYER_GZIP, OCI_LAYER_ZSTD: OCI_ND_LAYER_ZSTD}
COMPRESSION_MEDIA_TYPE = {"none": OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}

# Annotation keys lamina writes.
ANN_REF_NAME = "org.opencontainers.image.ref.name"
ANN_SOURCE = "dev.lamina.layer.source"
ANN_SOURCE_DIGEST = "dev.lamina.layer.source-digest"
ANN_SELECTOR = "dev.lamina.layer.selector"

EPOCH = "1970-01-01T00:00:00Z"

# The variant an architecture's images have when they name none (containerd's defaults).
DEFAULT_VARIANTS = {"arm64": "v8", "arm": "v7"}

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def layer_compression(media_type: str) -> str:
    """'none', 'gzip' or 'zstd' for a layer media type; InvalidSource for an unknown one."""
    base = media_type[: -len(NONDIST_SUFFIX)] if media_type.endswith(NONDIST_SUFFIX) else media_type
    try:
        return _LAYER_TYPES[base][0]
    except KeyError:
        raise InvalidSource(
            f"unknown layer media type {media_type!r}; lamina reads OCI and Docker v2 "
            "tar, tar+gzip and tar+zstd layers"
        ) from None


def oci_layer_media_type(media_type: str) -> str:
    """The OCI media type naming the same bytes as `media_type`; a nondistributable (foreign)
    layer's stays nondistributable."""
    layer_compression(media_type)
    if media_type.endswith(NONDIST_SUFFIX):
        return _NONDISTRIBUTABLE.get(_LAYER_TYPES[media_type[: -len(NONDIST_SUFFIX)]][1], OCI_ND_LAYER)
    return _LAYER_TYPES[media_type][1]


def is_nondistributable(media_type: str) -> bool:
    """Whether a layer of this media type is one registries do not receive (a foreign layer, fetched
    by pullers from its descriptor's urls): a push names it in the manifest and sends no bytes."""
    return oci_layer_media_type(media_type) in _NONDISTRIBUTABLE.values()


def check_digest(value: Any, where: str) -> str:
    """`value` if it is a well-formed sha256 digest, else InvalidSource naming `where`."""
    if not isinstance(value, str) or not _DIGEST_RE.fullmatch(value):  # match's $ allows a trailing newline
        raise InvalidSource(f"{where}: {value!r} is not a sha256 digest (sha256:<64 hex digits>)")
    return value


def sha256_digest(data: bytes) -> str:
    """The sha256 digest ("sha256:<hex>") of bytes in memory (blobs are hashed as streams, in blobs.py)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    """Stable JSON bytes: sorted keys, compact separators, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parse_json(data: bytes, where: str) -> Any:
    """Parsed JSON, or InvalidSource naming `where` when it is malformed."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidSource(f"{where}: malformed JSON ({e})") from e
    except RecursionError:
        raise InvalidSource(f"{where}: JSON nested too deeply to read") from None


def expect_dict(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidSource(f"{where}: expected a JSON object, found {type(value).__name__}")
    return value


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> "Platform":
        """From 'os/arch[/variant]', e.g. 'linux/amd64' or 'linux/arm64/v8'."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"{text!r} is not a platform; write os/arch[/variant], e.g. linux/amd64")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    @classmethod
    def host(cls) -> "Platform":
        """linux/<this machine's architecture>: the default pick from a multi-platform image."""
        machine = _host.machine().lower()
        return cls("linux", {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine))

    @classmethod
    def of_config(cls, config: Mapping[str, Any]) -> "Platform":
        return cls(
            str(config.get("os") or ""),
            str(config.get("architecture") or ""),
            str(config.get("variant") or ""),
        )

    def normalized(self) -> "Platform":
        """With its architecture's default variant when it names none ("7" read as "v7"), as
        containerd normalizes: linux/arm is linux/arm/v7, linux/arm64 is linux/arm64/v8."""
        variant = self.variant
        if variant and not variant.startswith("v") and variant.isdigit():
            variant = "v" + variant
        return Platform(self.os, self.architecture, variant or DEFAULT_VARIANTS.get(self.architecture, ""))

    def slug(self) -> str:
        """linux-arm64-v8: the platform in a file name (`compose --sbom`'s `{platform}`)."""
        return str(self).replace("/", "-")

    def matches(self, other: "Platform") -> bool:
        """Whether an image for `other` serves a request for this platform: same os and
        architecture, and, when this one names a variant, the same variant (defaults filled in);
        a request without a variant takes any variant (see `best`)."""
        a, b = self.normalized(), other.normalized()
        if (a.os, a.architecture) != (b.os, b.architecture):
            return False
        return not self.variant or a.variant == b.variant

    def best(self, platforms: Sequence["Platform"]) -> list[int]:
        """The positions of `platforms` a request for this platform picks: those it matches, and
        of those, when there are several, the ones of the requested (or else the default) variant.
        The one picking rule of every multi-platform source (registry indexes, OCI layouts)."""
        matching = [i for i, p in enumerate(platforms) if self.matches(p)]
        wanted = self.normalized().variant
        exact = [i for i in matching if platforms[i].normalized().variant == wanted]
        return exact or matching

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: tuple[tuple[str, str], ...] = field(default=())
    urls: tuple[str, ...] = ()  # where a nondistributable layer's blob is fetched from

    def to_json(self) -> dict:
        out: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.urls:
            out["urls"] = list(self.urls)
        return out

    @classmethod
    def of(cls, media_type: str, data: bytes) -> "Descriptor":
        """The descriptor of a small blob held in memory (a config, a manifest)."""
        return cls(media_type, sha256_digest(data), len(data))

    @classmethod
    def from_json(cls, value: Any, where: str) -> "Descriptor":
        value = expect_dict(value, where)
        size = value.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidSource(f"{where}: descriptor size {size!r} is not a non-negative integer")
        media_type = value.get("mediaType")
        if not isinstance(media_type, str):
            raise InvalidSource(f"{where}: descriptor has no mediaType")
        annotations = value.get("annotations") or {}
        urls = value.get("urls") or []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise InvalidSource(f"{where}: descriptor urls {urls!r} is not a list of strings")
        return cls(
            media_type=media_type,
            digest=check_digest(value.get("digest"), where),
            size=size,
            annotations=tuple(sorted((str(k), str(v)) for k, v in expect_dict(annotations, where).items())),
            urls=tuple(urls),
        )

    def with_annotations(self, extra: Mapping[str, str]) -> "Descriptor":
        merged = dict(self.annotations)
        merged.update(extra)
        return Descriptor(self.media_type, self.digest, self.size, tuple(sorted(merged.items())), self.urls)

    def as_oci_layer(self, annotations: Optional[tuple[tuple[str, str], ...]] = None) -> "Descriptor":
        """This layer descriptor under its OCI media type (same bytes, same digest), its urls kept,
        with `annotations` instead of its own when given."""
        return Descriptor(oci_layer_media_type(self.media_type), self.digest, self.size,
                          self.annotations if annotations is None else annotations, self.urls)

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]
