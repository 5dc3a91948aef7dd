"""OCI image layouts, as directories and as tar archives: read an image out, write one in."""
from __future__ import annotations

from typing import Optional

from lamina.errors import InvalidSource, LaminaError, shown
from lamina.formats.store import BlobSource, read_blob
from lamina.image import Image, Layer, config_diff_ids, layer_history
from lamina.model import (
    ANN_REF_NAME,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_LAYOUT_VERSION,
    Descriptor,
    Platform,
    canonical_json,
    expect_dict,
    layer_compression,
    parse_json,
)


def _ref_names(desc_json: dict) -> list[str]:
    ann = desc_json.get("annotations")
    if not isinstance(ann, dict):
        return []
    names = []
    for key in (ANN_REF_NAME, "io.containerd.image.name"):
        if isinstance(ann.get(key), str):
            names.append(ann[key])
    return names


def _platform_json(desc_json: dict) -> dict:
    platform = desc_json.get("platform")
    return platform if isinstance(platform, dict) else {}


def _tag_matches(wanted: str, names: list[str]) -> bool:
    for name in names:
        if name == wanted or name.endswith("/" + wanted) or name.endswith(":" + wanted):
            return True
        if ":" not in wanted and name in (wanted + ":latest", "docker.io/library/" + wanted + ":latest"):
            return True
        if "docker.io/library/" + wanted == name or "docker.io/" + wanted == name:
            return True
    return False


def _pick(entries: list[dict], where: str, tag: Optional[str], platform: Optional[Platform]) -> dict:
    candidates = entries
    if tag:
        candidates = [e for e in entries if _tag_matches(tag, _ref_names(e))]
        if not candidates:
            known = sorted({shown(n) for e in entries for n in _ref_names(e)})
            raise InvalidSource(f"{where}: no image tagged {tag!r}; it has {', '.join(known) or 'no tags'}")
    if len(candidates) > 1 and platform is not None:
        # the registry's rule (Platform.best): linux/arm picks arm/v7 here too
        with_platform = [e for e in candidates if isinstance(e.get("platform"), dict)]
        by_platform = [with_platform[i] for i in platform.best([Platform.of_config(e["platform"]) for e in with_platform])]
        if by_platform:
            candidates = by_platform
    if len(candidates) > 1 and len({str(e.get("digest")) for e in candidates}) == 1:
        return candidates[0]  # one image under several tags (as lamina writes image_tags)
    if len(candidates) > 1:
        names = sorted({shown(n) for e in candidates for n in _ref_names(e)})
        platforms = sorted({shown(str(Platform.of_config(e["platform"]))) for e in candidates
                            if isinstance(e.get("platform"), dict)})
        hint = f"tags: {', '.join(names)}" if names else f"platforms: {', '.join(platforms)}"
        raise InvalidSource(f"{where}: holds {len(candidates)} images; name one ({hint})")
    if not candidates:
        raise InvalidSource(f"{where}: holds no image")
    return candidates[0]


def read_manifest_image(source: BlobSource, manifest_desc: Descriptor, where: str, name: str,
                        tags: tuple[str, ...] = ()) -> Image:
    """The image a manifest descriptor names, with lazy layer openers."""
    manifest = expect_dict(parse_json(read_blob(source, manifest_desc, "manifest"), f"{where}: manifest"), f"{where}: manifest")
    config_desc = Descriptor.from_json(manifest.get("config"), f"{where}: manifest config")
    config_bytes = read_blob(source, config_desc, "config")
    config = expect_dict(parse_json(config_bytes, f"{where}: config"), f"{where}: config")
    layer_descs = manifest.get("layers")
    if not isinstance(layer_descs, list):
        raise InvalidSource(f"{where}: manifest has no layers list")
    descs = [Descriptor.from_json(d, f"{where}: manifest layer {i}") for i, d in enumerate(layer_descs)]
    for i, d in enumerate(descs):
        try:
            layer_compression(d.media_type)
        except InvalidSource as e:
            raise InvalidSource(f"{where}: layer {i}: {e}") from None
    diff_ids = config_diff_ids(config, where)
    if len(diff_ids) != len(descs):
        raise InvalidSource(
            f"{where}: manifest lists {len(descs)} layers but the config has {len(diff_ids)} diff_ids"
        )
    histories = layer_history(config, len(descs))
    layers = tuple(
        Layer(
            descriptor=d,
            diff_id=diff_ids[i],
            index=i,
            history=histories[i],
            opener=source.blob_opener(d.digest),
            path=source.blob_file(d.digest),
            source=name,
        )
        for i, d in enumerate(descs)
    )
    return Image(
        source=name,
        config_bytes=config_bytes,
        config_descriptor=config_desc,
        layers=layers,
        manifest_media_type=manifest_desc.media_type,
        tags=tags,
    )


def read_oci(source: BlobSource, name: str, tag: Optional[str] = None,
             platform: Optional[Platform] = None) -> Image:
    """The image in an OCI layout (directory or archive), picked by tag and platform."""
    where = source.where
    if not source.has_file("oci-layout"):
        raise InvalidSource(f"{where}: not an OCI layout (no oci-layout file)")
    layout = expect_dict(parse_json(source.read_file("oci-layout", "oci-layout"), f"{where}: oci-layout"), f"{where}: oci-layout")
    if layout.get("imageLayoutVersion") != OCI_LAYOUT_VERSION:
        raise InvalidSource(f"{where}: unsupported imageLayoutVersion {layout.get('imageLayoutVersion')!r}")
    index = expect_dict(parse_json(source.read_file("index.json", "index"), f"{where}: index.json"), f"{where}: index.json")
    entries = index.get("manifests")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InvalidSource(f"{where}: index.json has no manifests list")
    chosen = _pick(entries, where, tag, platform)
    tags = tuple(_ref_names(chosen)) if tag else tuple(
        n for e in entries if e.get("digest") == chosen.get("digest") for n in _ref_names(e))
    desc = Descriptor.from_json(chosen, f"{where}: index.json")
    for _ in range(4):  # nested indexes (multi-platform images)
        if desc.media_type in MANIFEST_TYPES:
            return read_manifest_image(source, desc, where, name, tags)
        if desc.media_type not in INDEX_TYPES:
            raise InvalidSource(f"{where}: unknown manifest media type {desc.media_type!r}")
        nested = expect_dict(parse_json(read_blob(source, desc, "index"), f"{where}: index"), f"{where}: index")
        sub = nested.get("manifests")
        if not isinstance(sub, list) or not all(isinstance(e, dict) for e in sub):
            raise InvalidSource(f"{where}: index {desc.digest} has no manifests list")
        sub = [e for e in sub if _platform_json(e).get("architecture") != "unknown"]  # attestations
        if len(sub) > 1 and platform is None:
            platform = Platform.host()
        if platform is not None and len(sub) > 1 and not any(
            isinstance(e.get("platform"), dict) and platform.matches(Platform.of_config(e["platform"])) for e in sub
        ):
            have = ", ".join(sorted(shown(str(Platform.of_config(_platform_json(e)))) for e in sub))
            raise InvalidSource(f"{where}: no image for platform {platform} (it has {have})")
        desc = Descriptor.from_json(_pick(sub, where, None, platform), f"{where}: index")
    raise InvalidSource(f"{where}: indexes nested too deeply")


def index_platforms(source: BlobSource, tag: Optional[str] = None) -> tuple[Platform, ...]:
    """The platforms of the multi-platform image an OCI layout holds (under `tag`), in its index's
    order, each one whose manifest the layout holds; () when it holds one image, several images
    (read_oci asks for a tag), or anything read_oci would refuse (it says why). Attestation
    entries (unknown/unknown) are left out."""
    try:
        return _index_platforms(source, tag)
    except (LaminaError, ValueError, TypeError, KeyError, AttributeError):
        return ()


def _index_platforms(source: BlobSource, tag: Optional[str]) -> tuple[Platform, ...]:
    where = source.where
    if not (source.has_file("oci-layout") and source.has_file("index.json")):
        return ()
    index = expect_dict(parse_json(source.read_file("index.json", "index"), f"{where}: index.json"), f"{where}: index.json")
    entries = [e for e in index.get("manifests") or () if isinstance(e, dict)]
    if tag:
        entries = [e for e in entries if _tag_matches(tag, _ref_names(e))]
    for _ in range(4):
        digests = {str(e.get("digest")) for e in entries}
        if len(digests) > 1 and len({n for e in entries for n in _ref_names(e)}) > 1:
            return ()  # several images under their own tags: read_oci asks for one
        if len(digests) != 1:
            break
        media_type = entries[0].get("mediaType")
        if not isinstance(media_type, str) or media_type not in INDEX_TYPES:
            break
        nested = expect_dict(parse_json(read_blob(source, Descriptor.from_json(entries[0], f"{where}: index"), "index"),
                                        f"{where}: index"), f"{where}: index")
        entries = [e for e in nested.get("manifests") or () if isinstance(e, dict)]
    found = [Platform.of_config(e["platform"]) for e in entries if isinstance(e.get("platform"), dict)
             and _platform_json(e).get("architecture") != "unknown"
             and isinstance(e.get("digest"), str) and source.blob_opener(e["digest"]) is not None]
    return tuple(found) if len(found) > 1 and len(set(found)) == len(found) else ()


def layout_files(manifest_desc: Descriptor, tags: tuple[str, ...]) -> dict[str, bytes]:
    """The small files of an OCI layout holding one manifest under the given tags."""
    entries = []
    for tag in tags or ("",):
        entry = manifest_desc.to_json()
        if tag:
            entry["annotations"] = {ANN_REF_NAME: tag}
        entries.append(entry)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return {
        "oci-layout": canonical_json({"imageLayoutVersion": OCI_LAYOUT_VERSION}),
        "index.json": canonical_json(index),
    }
