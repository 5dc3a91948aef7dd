"""`docker save` archives, both the classic layout and Docker 25+'s OCI-layout one: read and write."""
from __future__ import annotations

import re
from typing import Optional, Union

from lamina.blobs import sha256_stream, sniff_compression
from lamina.errors import DigestMismatch, InvalidSource, shown
from lamina.formats.store import DirSource, TarSource
from lamina.image import Image, Layer, config_diff_ids, layer_history
from lamina.model import (
    COMPRESSION_MEDIA_TYPE,
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    Descriptor,
    expect_dict,
    parse_json,
    sha256_digest,
)

_BLOB_NAME = re.compile(r"^(?:.*/)?blobs/sha256/([0-9a-f]{64})$")
_CONFIG_NAME = re.compile(r"^([0-9a-f]{64})\.json$")


def _normalize_tag(tag: str) -> str:
    return tag if ":" in tag.rsplit("/", 1)[-1] else tag + ":latest"


def _repo_tags(entry: dict) -> tuple[str, ...]:
    """An entry's RepoTags that are strings (none when it is not a list)."""
    tags = entry.get("RepoTags")
    return tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else ()


def read_docker_archive(source: Union[TarSource, DirSource], name: str, tag: Optional[str] = None) -> Image:
    """The image in a `docker save` archive (packed, or unpacked into a directory), picked by tag
    when it holds several."""
    where = source.where
    manifest = parse_json(source.read_file("manifest.json", "manifest.json"), f"{where}: manifest.json")
    if not isinstance(manifest, list) or not manifest or not all(isinstance(m, dict) for m in manifest):
        raise InvalidSource(f"{where}: manifest.json is not a non-empty list of images")
    entries = manifest
    if tag:
        wanted = _normalize_tag(tag)
        entries = [m for m in manifest if wanted in [_normalize_tag(t) for t in _repo_tags(m)]]
        if not entries:
            known = sorted({shown(t) for m in manifest for t in _repo_tags(m)})
            raise InvalidSource(f"{where}: no image tagged {tag!r}; it has {', '.join(known) or 'no tags'}")
    if len(entries) > 1:
        known = sorted({shown(t) for m in entries for t in _repo_tags(m)})
        raise InvalidSource(
            f"{where}: holds {len(entries)} images; name one as docker-archive:{where}:TAG "
            f"(tags: {', '.join(known) or 'none'})"
        )
    entry = entries[0]
    config_name = entry.get("Config")
    layer_names = entry.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list) or not all(
        isinstance(n, str) for n in layer_names
    ):
        raise InvalidSource(f"{where}: manifest.json entry needs Config and Layers")
    config_bytes = source.read_file(config_name, "config")
    config_digest = sha256_digest(config_bytes)
    named = _BLOB_NAME.match(config_name) or _CONFIG_NAME.match(config_name.rsplit("/", 1)[-1])
    if named and "sha256:" + named.group(1) != config_digest:
        raise DigestMismatch(f"{where}: config {config_name} has content {config_digest}")
    config = expect_dict(parse_json(config_bytes, f"{where}: config"), f"{where}: config")
    diff_ids = config_diff_ids(config, where)
    if len(diff_ids) != len(layer_names):
        raise InvalidSource(
            f"{where}: manifest.json lists {len(layer_names)} layers but the config has {len(diff_ids)} diff_ids"
        )
    histories = layer_history(config, len(layer_names))
    layers = []
    for i, layer_name in enumerate(layer_names):
        opener, size = source.member_opener(layer_name, "layer")
        compression = sniff_compression(source.head(layer_name))
        named = _BLOB_NAME.match(layer_name)
        if named:
            digest = "sha256:" + named.group(1)
        elif compression == "none":
            digest = diff_ids[i]  # an uncompressed layer's digest is its diff_id; checked when read
        else:
            with opener() as f:
                digest, _ = sha256_stream(f)
        layers.append(
            Layer(
                descriptor=Descriptor(COMPRESSION_MEDIA_TYPE[compression], digest, size),
                diff_id=diff_ids[i],
                index=i,
                history=histories[i],
                opener=opener,
                path=source.member_file(layer_name, "layer") if isinstance(source, DirSource) else None,
                source=name,
            )
        )
    tags = _repo_tags(entry)
    return Image(
        source=name,
        config_bytes=config_bytes,
        config_descriptor=Descriptor(DOCKER_CONFIG, config_digest, len(config_bytes)),
        layers=tuple(layers),
        manifest_media_type=DOCKER_MANIFEST,
        tags=tags,
    )
