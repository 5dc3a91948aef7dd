"""A pushed layer that a registry already keeps compressed: the engine records where an image was
pulled from (RepoDigests), and that registry's manifest maps each diff_id to its own compressed
blob. A push to that registry then names that blob and mounts it, so the pushed image shares its
layers with everyone who pulled the source, and no byte of it is sent."""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Mapping, Optional

from lamina.compress import wants_compression
from lamina.errors import LaminaError
from lamina.image import Image, Layer
from lamina.registry.client import RegistryClient
from lamina.registry.reference import parse_reference
from lamina.registry.source import open_registry_image
from lamina.registry.transport import RegistryOptions


def registry_forms(image: Image, registries: Iterable[str], options: RegistryOptions,
                   clients: Optional[dict[str, RegistryClient]] = None,
                   warn: Optional[Callable[[str], None]] = None) -> dict[str, Layer]:
    """diff_id -> the layer as a registry keeps it (compressed, its blob opened from there), for
    every uncompressed layer of `image` whose source image the engine says is kept on one of
    `registries` (the push's destinations; Layer.copies). Only copies there are used: they are
    mounted, so no byte moves, whereas bytes from another registry would be downloaded to send
    again what lamina can compress itself. Only manifests and configs are read; a copy that
    cannot be read is skipped with a warning (its layers are then compressed here)."""
    clients = clients if clients is not None else {}
    targets = set(registries)
    wanted = {l.diff_id for l in image.layers if wants_compression(l) and l.copies}
    refs = []
    for text in dict.fromkeys(c for l in image.layers if l.diff_id in wanted for c in l.copies):
        try:
            if parse_reference(text).registry in targets:
                refs.append(text)
        except LaminaError:
            continue
    found: dict[str, Layer] = {}
    for text in refs:
        if wanted <= found.keys():
            break
        try:
            ref = parse_reference(text)
            client = clients.setdefault(ref.registry, RegistryClient(ref.registry, options))
            twin = open_registry_image(text, dataclasses.replace(options, warn=None), platform=image.platform,
                                       client=client)
        except LaminaError as e:
            if warn is not None:
                warn(f"{text}, where the engine says a source image is kept: not read ({e}); "
                     "its layers are compressed here instead")
            continue
        for layer in twin.layers:
            if layer.diff_id in wanted and layer.compression != "none":
                found.setdefault(layer.diff_id, layer)
    return found


def with_registry_forms(image: Image, forms: Mapping[str, Layer]) -> Image:
    """`image` with each uncompressed layer that `forms` has (by diff_id) named by its registry
    blob: same diff_id and config, the registry's compressed digest in the manifest. Its bytes,
    if a destination needs them, stream from that registry and are checked against digest and
    diff_id as they are sent."""
    layers = []
    for layer in image.layers:
        twin = forms.get(layer.diff_id) if wants_compression(layer) else None
        if twin is None:
            layers.append(layer)
            continue
        layers.append(dataclasses.replace(
            layer,
            descriptor=twin.descriptor.as_oci_layer(annotations=layer.descriptor.annotations),
            opener=twin.opener, path=None, verified_by="",
        ))
    return dataclasses.replace(image, layers=tuple(layers), manifest_media_type="")
