"""Multi-platform images: one composed Image per platform under one OCI image index.

An index spec (JSON) names the platforms' compose specs:

    {"platforms": [{...a compose spec with "platform": "linux/amd64"...},
                   {...a compose spec with "platform": "linux/arm64"...}],
     "format": "oci", "tags": ["app:1"], "target": "//images:app"}

Each platform is composed on its own (its base and layers resolved to that platform, checked and
recorded in the audit trail on its own); the index lists each platform's manifest with its
platform. `oci` and `oci-archive` hold the index (index.json names it under the tags; the
per-platform manifests are its entries); `docker-archive` and the engine hold one platform."""
from __future__ import annotations

import json
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import Any, Iterator, Optional, Sequence

from lamina.errors import LaminaError, SpecError
from lamina.image import Image, Layer
from lamina.model import OCI_INDEX, Descriptor, Platform, canonical_json
from lamina.spec import Spec, parse_spec

INDEX_FORMATS = ("oci", "oci-archive")
_KEYS = {"platforms", "format", "tags", "target"}


def platform_json(platform: Platform) -> dict:
    out = {"architecture": platform.architecture, "os": platform.os}
    if platform.variant:
        out["variant"] = platform.variant
    return out


@dataclass(frozen=True)
class ImageIndex:
    """A multi-platform image: its platforms' images (in the order given) under one OCI index."""

    images: tuple[Image, ...]
    tags: tuple[str, ...] = ()
    source: str = ""

    @property
    def index_bytes(self) -> bytes:
        return canonical_json({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{**image.manifest_descriptor.to_json(), "platform": platform_json(image.platform)}
                          for image in self.images],
        })

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor.of(OCI_INDEX, self.index_bytes)

    def unique_layers(self) -> tuple[Layer, ...]:
        """Each blob once across the platforms (they may share some), in order."""
        seen: set[str] = set()
        out = []
        for image in self.images:
            for layer in image.unique_layers():
                if layer.descriptor.digest not in seen:
                    seen.add(layer.descriptor.digest)
                    out.append(layer)
        return tuple(out)

    def small_blobs(self) -> dict[str, bytes]:
        """digest: bytes of every config and manifest, and of the index."""
        out = {}
        for image in self.images:
            out[image.config_descriptor.digest] = image.config_bytes
            out[image.manifest_descriptor.digest] = image.manifest_bytes
        out[self.descriptor.digest] = self.index_bytes
        return out


@dataclass(frozen=True)
class IndexSpec:
    platforms: tuple[Spec, ...]
    format: str
    tags: tuple[str, ...]
    target: Optional[str] = None

    def what(self, spec: Spec) -> str:
        return f"{self.target or 'the image'} for {spec.platform}"


def is_index_spec(data: Any) -> bool:
    return isinstance(data, dict) and "platforms" in data


def parse_index_spec(data: Any) -> IndexSpec:
    if not isinstance(data, dict):
        raise SpecError("an index spec is a JSON object")
    unknown = set(data) - _KEYS
    if unknown:
        raise SpecError(f"unknown index spec keys {sorted(unknown)}; known: {sorted(_KEYS)} (each platform's "
                        "compose spec goes in \"platforms\")")
    entries = data.get("platforms")
    if not isinstance(entries, list) or not entries:
        raise SpecError("platforms must be a non-empty list of compose specs, one per platform")
    fmt = data.get("format", "oci")
    if fmt not in INDEX_FORMATS:
        raise SpecError(f"format {fmt!r} holds one platform; a multi-platform image is written as "
                        f"{' or '.join(INDEX_FORMATS)} (or compose one platform's spec)")
    tags = data.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise SpecError("tags must be a list of strings")
    target = data.get("target")
    if target is not None and not isinstance(target, str):
        raise SpecError("target must be a string")
    specs = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise SpecError(f"platforms[{i}] is not a compose spec (a JSON object)")
        if "platforms" in entry:
            raise SpecError(f"platforms[{i}]: an index spec cannot nest another")
        if not entry.get("platform"):
            raise SpecError(f"platforms[{i}]: each platform's spec names its platform, e.g. \"platform\": \"linux/arm64\"")
        # each platform's image carries the index's tags (its SBOM names the image by them)
        spec = parse_spec({**entry, "format": "oci", "tags": list(tags)})
        key = str(spec.platform.normalized()) if spec.platform else ""
        if key in seen:
            raise SpecError(f"platforms[{i}]: platform {spec.platform} is given twice (also platforms[{seen[key]}])")
        seen[key] = i
        specs.append(spec)
    return IndexSpec(tuple(specs), fmt, tuple(tags), target)


def read_spec_file(path: str) -> Any:
    from lamina.model import parse_json

    with open(path, "rb") as f:
        return parse_json(f.read(), path)


@contextmanager
def composed_index(ispec: IndexSpec, scratch_dir: str, registry: Optional[Any] = None,
                   notes: Optional[list[str]] = None, inventories: Optional[Sequence[Any]] = None) -> Iterator[ImageIndex]:
    """The ImageIndex `ispec` describes: each platform composed lazily (see build.composed).
    `inventories`, when given, one per platform, receive each platform's packages (for its SBOM)."""
    from lamina.build import composed

    with ExitStack() as stack:
        images = []
        for i, spec in enumerate(ispec.platforms):
            inventory = inventories[i] if inventories is not None else None
            try:
                image = stack.enter_context(composed(spec, scratch_dir, registry, notes=notes, inventory=inventory))
            except LaminaError as e:  # which platform failed: a selector may match on one only
                raise for_platform(e, spec.platform) from None
            if spec.platform is not None and not spec.platform.matches(image.platform) \
                    and not spec.allow_platform_mismatch:
                raise SpecError(f"{ispec.what(spec)}: the composed image is {image.platform}")
            images.append(image)
        yield ImageIndex(tuple(images), ispec.tags, ispec.target or "the composed index")


def for_platform(e: LaminaError, platform: Optional[Platform]) -> LaminaError:
    text = f"platform {platform}: {e}"
    try:
        return type(e)(text)
    except TypeError:
        return SpecError(text)


def index_audit(ispec: IndexSpec, index: ImageIndex) -> dict:
    """The audit trail of a multi-platform image: the index's digest and each platform's trail."""
    from lamina.build import audit_trail

    rows = []
    for spec, image in zip(ispec.platforms, index.images):
        base_target = (spec.base.target if spec.base else None) or ""
        rows.append({"platform": str(image.platform), **audit_trail(image, base_target, spec.target or "")})
    return {"index": index.descriptor.digest, "media_type": OCI_INDEX, "tags": list(index.tags), "platforms": rows}


def audit_bytes(ispec: IndexSpec, index: ImageIndex) -> bytes:
    return (json.dumps(index_audit(ispec, index), indent=2, sort_keys=True) + "\n").encode()


def build_index(ispec: IndexSpec, out: Optional[str], audit: Optional[str] = None,
                notes: Optional[list[str]] = None, sbom: Optional[str] = None) -> ImageIndex:
    """Compose every platform of `ispec` and write the index in its format at `out` (its audit
    trail at `audit`; one SBOM per platform at `sbom`, whose `{platform}` is replaced by the
    platform, e.g. linux-arm64), as build.build does for one platform."""
    import os

    from lamina.build import sbom_bytes, write_small_file
    from lamina.formats.write import write
    from lamina.sbom import Inventory

    if sbom and "{platform}" not in sbom:
        raise SpecError(f"--sbom {sbom}: a multi-platform image has one SBOM per platform; put {{platform}} in "
                        "the path, e.g. app.{platform}.cdx.json")
    scratch_dir = os.path.dirname(os.path.abspath(out or audit or sbom or "."))
    inventories = [Inventory() for _ in ispec.platforms] if sbom else None
    with composed_index(ispec, scratch_dir, notes=notes, inventories=inventories) as index:
        trail = audit_bytes(ispec, index) if audit else None
        documents = [(sbom.replace("{platform}", (spec.platform or image.platform).slug()),
                      sbom_bytes(spec, image, inventory))
                     for spec, image, inventory in zip(ispec.platforms, index.images, inventories)
                     ] if sbom and inventories is not None else []
        if out is not None:
            write(index, ispec.format, out)
        if audit and trail is not None:
            write_small_file(audit, trail)
        for path, document in documents:
            write_small_file(path, document)
        return index


def one_platform(data: Any, platform: Optional[str], where: str) -> Spec:
    """The compose spec of one platform of an index spec: `platform`'s, or the only one; for
    commands whose destination holds one platform (the engine, a docker-archive)."""
    ispec = parse_index_spec(data)
    names = ", ".join(str(s.platform) for s in ispec.platforms)
    if platform is None:
        if len(ispec.platforms) == 1:
            picked = ispec.platforms[0]
        else:
            raise SpecError(f"{where}: a multi-platform image ({names}); this destination holds one platform: "
                            "pass --platform, e.g. --platform linux/amd64")
    else:
        try:
            wanted = Platform.parse(platform)
        except ValueError as e:
            raise SpecError(f"--platform: {e}") from None
        found = [s for s in ispec.platforms if s.platform is not None and wanted.matches(s.platform)]
        if not found:
            raise SpecError(f"{where}: has no {wanted} image; its platforms are {names}")
        picked = found[0]
    tags = ispec.tags or picked.tags
    return replace(picked, tags=tags, format="docker-archive", target=picked.target or ispec.target)
