"""Layer indexes of synthetic images, scanned in memory, for tests of the composition checks."""
from __future__ import annotations

import io
from typing import Optional, Sequence

from lamina.analyze.index import LayerIndex
from lamina.analyze.scan import scan_layer
from lamina.image import Layer
from lamina.model import Descriptor
from lamina_testing.images import MEDIA, FakeImage, sha


def fake_layers(image: FakeImage) -> tuple[Layer, ...]:
    """The image's layers as lamina Layers whose bytes come from memory."""
    out = []
    for i, fake in enumerate(image.layers):
        blob = fake.blob
        history = ({"created_by": fake.created_by or f"layer {i}"},)
        out.append(Layer(Descriptor(MEDIA[fake.compression], sha(blob), len(blob)), sha(fake.tar), i, history,
                         opener=lambda blob=blob: io.BytesIO(blob)))  # type: ignore[misc]
    return tuple(out)


def indexes(image: FakeImage, source: str, picks: Optional[Sequence[int]] = None) -> tuple[LayerIndex, ...]:
    """Indexes of the picked layers (default: all) of `image`, each knowing the layers below it."""
    layers = fake_layers(image)
    chosen = range(len(layers)) if picks is None else [p % len(layers) for p in picks]
    platform = f"{image.os}/{image.architecture}"
    return tuple(scan_layer(layers[i], source, layers[:i], platform) for i in chosen)
