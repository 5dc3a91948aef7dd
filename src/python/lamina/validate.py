"""A validator: reads an image back and checks every blob's digest and size and every layer's diff_id."""
from __future__ import annotations

from dataclasses import dataclass

from lamina.blobs import DiffIdHasher, chunks
from lamina.errors import DigestMismatch
from lamina.image import Image


@dataclass(frozen=True)
class Report:
    layers: int
    bytes: int


def validate(image: Image) -> Report:
    total = 0
    for layer in image.layers:
        what = f"{image.source}: layer {layer.index} ({layer.descriptor.digest})"
        hasher = DiffIdHasher(layer.compression, what)
        with layer.open_blob(what) as f:
            for data in chunks(f):
                hasher.update(data)
                total += len(data)
        diff_id = hasher.digest()
        if diff_id != layer.diff_id:
            raise DigestMismatch(f"{what}: uncompressed content is {diff_id}, the config says {layer.diff_id}")
    return Report(len(image.layers), total)
