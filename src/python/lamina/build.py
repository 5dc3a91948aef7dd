"""From a Spec to an image on disk: open sources, select layers, make the files layer, compose, write."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Optional, Sequence

from lamina.compose import AddedLayer, ComposedImage, compose
from lamina.errors import InvalidSource, SpecError
from lamina.extract import read_selection
from lamina.formats.write import write
from lamina.image import Image, Layer
from lamina.newlayer import build_files_layer, files_from_dir, read_files_layer_dir
from lamina.select import parse_selector, select
from lamina.sources import open_image, parse_source
from lamina.spec import FileSpec, LayerSpec, Spec


def _open(spec: LayerSpec, platform) -> tuple[Image, tuple[Layer, ...], str, bool]:  # type: ignore[no-untyped-def]
    """(image, selected layers, selector text, trusted) for one layer spec."""
    ref = parse_source(spec.source)
    selection = read_selection(ref.path) if os.path.isdir(ref.path) else None
    name = spec.name or (selection.source if selection else spec.source)
    image = open_image(spec.source, name=name, platform=platform)
    if spec.layer is None:
        if selection is None:
            raise SpecError(f"{spec.source}: name the layers to take with \"layer\" (e.g. \"-1\")")
        layers = tuple(image.layers[i] for i in selection.indices)
        return image, layers, selection.selector, True
    selector = parse_selector(spec.layer)
    return image, select(image, selector), str(selector), selection is not None


def audit_trail(image: ComposedImage, base: Optional[Image], added: Sequence[AddedLayer],
                new_layers: Sequence[Layer], base_target: str = "", target: str = "") -> dict:
    """Where every layer of the composed image came from: the `<name>.layers.json` record. Each
    row: the source reference and the layer's index in it, the selector that took it ("base" for
    the base image's layers, "files" for the layer of new files), the build target that asked for
    it, and the layer's digest, diff_id, size and created_by in the composed image."""
    rows = []
    for layer in base.layers if base else ():
        rows.append({"source": base.source if base else "", "selector": "base", "target": base_target or target,
                     "source_index": layer.index})
    for a in added:
        rows.append({"source": a.source, "selector": a.selector, "target": a.target, "source_index": a.layer.index})
    for layer in new_layers:
        rows.append({"source": "files", "selector": "files", "target": target, "source_index": None})
    for i, (row, layer) in enumerate(zip(rows, image.layers)):
        row.update({
            "index": i,
            "digest": layer.descriptor.digest,
            "diff_id": layer.diff_id,
            "size": layer.descriptor.size,
            "created_by": layer.created_by,
        })
    return {"manifest": image.manifest_descriptor.digest, "config": image.config_descriptor.digest,
            "tags": list(image.tags), "layers": rows}


def build(spec: Spec, out: str, workdir: Optional[str] = None, audit: Optional[str] = None) -> ComposedImage:
    base: Optional[Image] = None
    base_trusted = False
    if spec.base is not None:
        base_spec = spec.base if spec.base.layer is not None or _is_bundle(spec.base.source) else LayerSpec(spec.base.source, ":", spec.base.name)
        base, base_layers, _, base_trusted = _open(base_spec, spec.platform)
        if len(base_layers) != len(base.layers):
            raise SpecError(f"base {spec.base.source}: a base must be a whole image, not some of its layers")
        missing = [l for l in base.layers if l.opener is None]
        if missing:
            raise InvalidSource(f"base {spec.base.source}: layer {missing[0].index} has no bytes in this source")
    added = []
    for layer_spec in spec.layers:
        image, layers, selector, trusted = _open(layer_spec, spec.platform or (base.platform if base else None))
        added.extend(
            AddedLayer(l, image.source, selector, image.platform, trusted, layer_spec.target or "",
                       tuple(image.diff_ids[: l.index]))
            for l in layers
        )
    scratch_dir = workdir or os.path.dirname(os.path.abspath(out))
    os.makedirs(scratch_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".lamina-files-", dir=scratch_dir)
    try:
        new_layers = []
        files = collect_files(spec.files, spec.file_dirs)
        if spec.files_layer is not None:
            new_layers.append(read_files_layer_dir(spec.files_layer))
        elif files:
            new_layers.append(build_files_layer(files, os.path.join(tmp, "files-layer.tar.gz")))
        image = compose(
            base,
            added,
            new_layers,
            spec.config,
            platform=spec.platform,
            allow_platform_mismatch=spec.allow_platform_mismatch,
            tags=spec.tags,
            base_trusted=base_trusted,
            # a files layer read from disk is checked (digest and diff_id) as it is written
            new_layers_trusted=spec.files_layer is None,
            new_layers_source=f"files_layer {spec.files_layer}" if spec.files_layer else "the new files layer",
        )
        if audit:
            base_target = (spec.base.target if spec.base else None) or ""
            trail = audit_trail(image, base, added, new_layers, base_target, spec.target or "")
            data = json.dumps(trail, indent=2, sort_keys=True) + "\n"
            tmp_audit = os.path.join(tmp, "audit.json")
            with open(tmp_audit, "w") as f:
                f.write(data)
        write(image, spec.format, out)
        if audit:
            os.replace(tmp_audit, audit)
        return image
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def collect_files(files: Sequence[FileSpec], file_dirs: Sequence[FileSpec]) -> list[tuple[str, str]]:
    """(image path, local path) of every file the files layer holds."""
    out = [(f.dest, f.src) for f in files]
    for d in file_dirs:
        if not os.path.isdir(d.src):
            raise SpecError(f"file_dirs: {d.src!r} is not a directory")
        out.extend(files_from_dir(d.src, d.dest))
    return out


def _is_bundle(source: str) -> bool:
    path = parse_source(source).path
    return os.path.isdir(path) and read_selection(path) is not None
