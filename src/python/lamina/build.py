"""From a compose Spec to an Image: open sources, select layers, make the files layer, compose; and to disk."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Optional, Sequence

from lamina.compose import compose
from lamina.errors import InvalidSource, SpecError
from lamina.extract import read_selection
from lamina.formats.write import write
from lamina.image import Image, Layer, with_copies
from lamina.newlayer import build_files_layer, files_from_dir, read_files_layer_dir
from lamina.pkgdb import build_merge_layer, is_merge_layer, plan_for_layers, read_layer, read_merge_dir, report_lines
from lamina.select import parse_selector, select
from lamina.sources import open_image, parse_source
from lamina.model import Platform, canonical_json
from lamina.spec import FileSpec, LayerSpec, Spec

if TYPE_CHECKING:
    from lamina.registry.transport import RegistryOptions
    from lamina.sbom import Inventory


def _open(spec: LayerSpec, platform: Optional[Platform],
          registry: Optional["RegistryOptions"] = None) -> tuple[Image, tuple[Layer, ...], str]:
    """(image, selected layers, selector text) for one layer spec."""
    ref = parse_source(spec.source)
    selection = read_selection(ref.path) if os.path.isdir(ref.path) else None
    if spec.verified and selection is None:
        raise SpecError(f"{spec.source}: \"verified\" vouches for a bundle `lamina extract` wrote, and this is "
                        "not one; leave it out to have the layers checked as they are read")
    name = spec.name or (selection.source if selection else spec.source)
    image = open_image(spec.source, name=name, platform=platform, registry=registry)
    if selection is not None:
        image = with_copies(image, selection.copies)
    if spec.verified:
        image = dataclasses.replace(image, layers=tuple(
            dataclasses.replace(l, verified_by="lamina extract") if l.has_bytes else l for l in image.layers))
    if selection is not None and selection.fetch_from:
        # A shallow bundle: the bytes are read from the registry if a destination needs them, and
        # checked (digest, diff_id) as they are read, as any unverified layer is.
        image = dataclasses.replace(image, layers=tuple(
            l if l.has_bytes else dataclasses.replace(l, opener=_registry_opener(selection.fetch_from, l, registry))
            for l in image.layers))
    if spec.layer is None:
        if selection is None:
            raise SpecError(f"{spec.source}: name the layers to take with \"layer\" (e.g. \"-1\")")
        return image, tuple(image.layers[i] for i in selection.indices), selection.selector
    selector = parse_selector(spec.layer)
    return image, select(image, selector), str(selector)


def _registry_opener(reference: str, layer: Layer, registry: Optional["RegistryOptions"]):  # type: ignore[no-untyped-def]
    """Opens `layer`'s blob in the registry `reference` names, when (and only if) it is called: a
    composition that no destination reads the bytes of asks the registry nothing."""
    def open_blob():  # type: ignore[no-untyped-def]
        from lamina.registry.client import RegistryClient
        from lamina.registry.reference import parse_reference
        from lamina.registry.transport import RegistryOptions

        ref = parse_reference(reference)
        options = registry or RegistryOptions.from_environ(os.environ)
        return RegistryClient(ref.registry, options).open_blob(ref.repository, layer.descriptor.digest, layer.what)

    return open_blob


def audit_trail(image: Image, base_target: str = "", target: str = "") -> dict:
    """Where every layer of a composed image came from: the `<name>.layers.json` record. Each
    row: the source reference and the layer's index in it, the selector that took it ("base" for
    the base image's layers, "files" for the layer of new files, "merge-package-databases" for the
    layer of merged package databases, with what it merged from which layers in "merged"), the build target that asked for
    it, and the layer's digest, diff_id, size and created_by in the composed image."""
    rows = []
    for i, layer in enumerate(image.layers):
        if layer.taken is not None:
            row = {"source": layer.source, "selector": layer.taken.selector, "target": layer.taken.target,
                   "source_index": layer.index}
        elif is_merge_layer(layer):  # made here: the package databases of the layers it names, merged
            row = {"source": "package databases", "selector": "merge-package-databases", "target": target,
                   "source_index": None, "merged": str(layer.history[-1].get("comment") or "")}
        elif layer.index < 0:  # a new layer, of the image's own files
            row = {"source": "files", "selector": "files", "target": target, "source_index": None}
        else:  # a layer of the base image
            row = {"source": layer.source, "selector": "base", "target": base_target or target,
                   "source_index": layer.index}
        row.update({
            "index": i,
            "digest": layer.descriptor.digest,
            "diff_id": layer.diff_id,
            "size": layer.descriptor.size,
            "created_by": layer.created_by,
        })
        rows.append(row)
    return {"manifest": image.manifest_descriptor.digest, "config": image.config_descriptor.digest,
            "tags": list(image.tags), "layers": rows}


def open_stack(spec: Spec, registry: Optional["RegistryOptions"] = None) -> tuple[Optional[Image], list[Layer]]:
    """The base image `spec` names (None for scratch) and the layers it takes from its sources, in
    order, as `compose` stacks them on the base."""
    base: Optional[Image] = None
    if spec.base is not None:
        base_spec = spec.base
        if spec.base.layer is None and not _is_bundle(spec.base.source):
            base_spec = dataclasses.replace(spec.base, layer=":")
        base, base_layers, _ = _open(base_spec, spec.platform, registry)
        if len(base_layers) != len(base.layers):
            raise SpecError(f"base {spec.base.source}: a base must be a whole image, not some of its layers")
        missing = [l for l in base.layers if not l.has_bytes]
        if missing:
            raise InvalidSource(f"base {spec.base.source}: layer {missing[0].index} has no bytes in this source")
    layers = []
    for layer_spec in spec.layers:
        image, selected, selector = _open(layer_spec, spec.platform or (base.platform if base else None), registry)
        layers.extend(l.taken_from(image, selector, layer_spec.target or "") for l in selected)
    return base, layers


@contextmanager
def composed(spec: Spec, scratch_dir: str, registry: Optional["RegistryOptions"] = None,
             notes: Optional[list[str]] = None, inventory: Optional["Inventory"] = None) -> Iterator[Image]:
    """The Image `spec` describes, composed without copying a layer: its layers read from their
    sources when a consumer (a writer, push, load) reads them. The files layer, when the spec has
    files, is packed into a temporary directory under `scratch_dir`, removed on exit; packing it
    reads the headers of the layers below it (see newlayer.build_files_layer). `registry`
    configures `docker://` sources (default: as the environment says).

    When the stack's layers come from two or more images and more than one of them rewrote a
    package database (dpkg's status, apk's installed), a layer of the merged databases goes on
    the stack, below the files layer (see lamina.pkgdb): finding out reads every layer once.
    `spec.package_db_layer` gives it made beforehand instead, and `merge_package_databases`
    false leaves it out. `notes` receives what the merge did (merged databases, conflicts).

    `inventory`, when given, receives the packages each layer's databases list, for the SBOM:
    from `spec.package_db_layer`'s packages.json, or the merge's walk, or else a walk of the
    stack's layers for it; `spec.package_databases` false says there are none (nothing is read)."""
    base, layers = open_stack(spec, registry)
    os.makedirs(scratch_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".lamina-files-", dir=scratch_dir)
    try:
        stack = [*(base.layers if base is not None else ()), *layers]
        headers = None  # the stack's filesystem from its headers, when the merge walked them
        inventoried = False
        if spec.package_db_layer is not None:
            merged = read_merge_dir(spec.package_db_layer)  # None: no merge was needed
            if merged.layer is not None:
                layers.append(merged.layer)
            if notes is not None:
                notes.extend(report_lines(merged.report))
            found_inventory = merged.inventory() if inventory is not None else None
            if inventory is not None and found_inventory is not None:
                inventory.layers.update(found_inventory.layers)
                inventory.unread.extend(found_inventory.unread)
                inventoried = True
        elif not spec.package_databases:  # none in the stack (as its indexes said): none to merge or list
            inventoried = True
        elif spec.merge_package_databases and len({l.source for l in stack}) > 1:
            # layers of two or more images: each read once for its package databases (and headers)
            found, headers = plan_for_layers(stack)
            layer = build_merge_layer(found, os.path.join(tmp, "package-db-layer.tar.gz"), headers)
            if layer is not None:
                layers.append(layer)
            if notes is not None:
                notes.extend(report_lines(found.report()))
            if inventory is not None:
                from lamina.sbom import merge_inventory

                inventory.add_stack(found)
                if layer is not None:
                    inventory.layers[layer.descriptor.digest] = merge_inventory(found, layer.descriptor.digest)
                inventoried = True
        if inventory is not None and not inventoried:
            inventory_of(stack, inventory)
        files = collect_files(spec.files, spec.file_dirs)
        if spec.files_layer is not None:
            # read from disk: checked (digest and diff_id) wherever it is read
            layers.append(read_files_layer_dir(spec.files_layer))
        elif files:
            # laid on the stack as COPY writes (through its symlinks, into its directories): the
            # stack's headers are walked for that, each layer read once (the merge's walk is reused)
            from lamina.analyze.below import from_layers

            below = headers if headers is not None else from_layers(stack)
            layers.append(build_files_layer(files, os.path.join(tmp, "files-layer.tar.gz"), below))
        yield compose(
            base,
            layers,
            spec.config,
            platform=spec.platform,
            allow_platform_mismatch=spec.allow_platform_mismatch,
            tags=spec.tags,
            name=spec.target or (spec.tags[0] if spec.tags else "the composed image"),
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def inventory_of(stack: Sequence[Layer], inventory: "Inventory") -> None:
    """The packages each layer of `stack` lists, each layer read once (for the SBOM)."""
    from lamina.sbom import layer_inventory

    for layer in stack:
        if not layer.has_bytes:
            inventory.unread.append(layer.descriptor.digest)
            continue
        dbs, _ = read_layer(layer)
        if dbs.copies or dbs.os_release or dbs.status_d_copies:
            inventory.layers[layer.descriptor.digest] = layer_inventory(layer.descriptor.digest, dbs, layer.what)


def sbom_bytes(spec: Spec, image: Image, inventory: "Inventory") -> bytes:
    """The `<name>.cdx.json` of the image `spec` composed (see lamina.sbom)."""
    from lamina.sbom import sbom_document

    base_target = (spec.base.target if spec.base else None) or ""
    trail = audit_trail(image, base_target, spec.target or "")
    return sbom_document(image, trail, inventory).encode()


def audit_bytes(spec: Spec, image: Image) -> bytes:
    """The `<name>.layers.json` of the image `spec` composed (see audit_trail)."""
    base_target = (spec.base.target if spec.base else None) or ""
    return (json.dumps(audit_trail(image, base_target, spec.target or ""), indent=2, sort_keys=True) + "\n").encode()


def write_small_file(path: str, data: bytes) -> None:
    """A small output file, written whole under a temporary name beside it, then renamed into place."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".lamina-tmp-", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def build(spec: Spec, out: Optional[str], workdir: Optional[str] = None, audit: Optional[str] = None,
          notes: Optional[list[str]] = None, sbom: Optional[str] = None, placed: Optional[str] = None) -> Image:
    """Compose `spec` and write it in its format at `out` (and its audit trail at `audit`, its SBOM
    at `sbom`), atomically. Without `out` or `sbom`, only the audit trail is written: no layer byte
    is read. The SBOM reads the layers' package databases (see `composed`). `placed` (an oci
    layout only): the layout leaves out the verified layer blobs that are layout files already,
    and this JSON file lists them ({"blobs": [{"digest", "path"}]}) for the caller to put in."""
    from lamina.sbom import Inventory

    scratch_dir = workdir or os.path.dirname(os.path.abspath(out or audit or sbom or "."))
    inventory = Inventory() if sbom else None
    with composed(spec, scratch_dir, notes=notes, inventory=inventory) as image:
        trail = audit_bytes(spec, image) if audit else None
        document = sbom_bytes(spec, image, inventory) if sbom and inventory is not None else None
        if out is not None:
            blobs: Optional[list] = [] if placed else None
            write(image, spec.format, out, placed=blobs)
            if placed:
                write_small_file(placed, canonical_json({"blobs": blobs}))
        if audit and trail is not None:
            write_small_file(audit, trail)
        if sbom and document is not None:
            write_small_file(sbom, document)
        return image


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
