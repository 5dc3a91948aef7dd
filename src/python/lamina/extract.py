"""extract: selected layers of a source image into a sparse OCI layout (a "bundle"), each verified once.

A bundle is an OCI layout whose manifest describes the whole source image, but whose blobs/ holds
only the config and the selected layers; `lamina-selection.json` says which ones and where from.
It is the cached intermediate the Pants plugin keeps per `docker_layer`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

from lamina.blobs import (
    CHUNK,
    DiffIdHasher,
    TeeReader,
    UncompressedCheckingReader,
    VerifiedReader,
    chunks,
    copy_extent_verified,
    decompressed,
)
from lamina.errors import DigestMismatch, InvalidSource
from lamina.formats.oci_layout import layout_files
from lamina.formats.store import BlobDir, replace_path
from lamina.image import Image, Layer
from lamina.model import Descriptor, parse_json
from lamina.progress import Progress

if TYPE_CHECKING:
    from lamina.analyze.index import LayerIndex

SELECTION_FILE = "lamina-selection.json"
INDEX_FILE = "lamina-index.json"  # the scan index of the selected layers, when extract made one


@dataclass(frozen=True)
class Selection:
    """What a bundle holds: which layers of which source, picked by which selector."""

    source: str
    selector: str
    indices: tuple[int, ...]
    copies: tuple[str, ...] = ()  # registry manifests of the source image (see Layer.copies)
    # A shallow bundle holds no layer bytes: they stay in the registry this pinned reference names,
    # read from there only when a destination needs them (extract(..., fetch_from=...)).
    fetch_from: Optional[str] = None
    # With an index: whether any selected layer holds a package database the merge reads or notes
    # (pkgdb.databases_in_index); None without one. Reported to the caller, not kept in the bundle.
    package_databases: Optional[bool] = None

    def to_json(self, image: Image) -> dict:
        extra: dict = {"registry_copies": list(self.copies)} if self.copies else {}
        if self.fetch_from:
            extra["fetch_from"] = self.fetch_from
        return {
            **extra,
            "source": self.source,
            "selector": self.selector,
            "platform": str(image.platform),
            "layers": [
                {
                    "index": i,
                    "descriptor": _oci(image.layers[i].descriptor).to_json(),
                    "diff_id": image.layers[i].diff_id,
                    "created_by": image.layers[i].created_by,
                }
                for i in self.indices
            ],
        }


def read_selection(layout_dir: str) -> Optional[Selection]:
    path = os.path.join(layout_dir, SELECTION_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        data = parse_json(f.read(), path)
    try:
        copies = data.get("registry_copies") or []
        if not isinstance(copies, list) or not all(isinstance(c, str) for c in copies):
            raise ValueError(f"registry_copies {copies!r} is not a list of strings")
        fetch_from = data.get("fetch_from")
        if fetch_from is not None and not isinstance(fetch_from, str):
            raise ValueError(f"fetch_from {fetch_from!r} is not a string")
        return Selection(str(data["source"]), str(data["selector"]), tuple(int(l["index"]) for l in data["layers"]),
                         tuple(copies), fetch_from or None)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InvalidSource(f"{path}: malformed selection file ({e})") from e


def _oci(d: Descriptor) -> Descriptor:
    return d.as_oci_layer()


def copy_layer_verified(layer: Layer, dest: str, what: str, progress: Progress,
                        pause: Optional[Callable[[str], None]] = None) -> None:
    """Copy a layer blob to `dest` in one pass, checking its digest, size and diff_id. `pause`, a
    test hook, is called with the temporary file once the bytes are in it, before it is renamed
    into place."""
    hasher = None if layer.compression == "none" else DiffIdHasher(layer.compression, what)
    tmp = dest + ".tmp"
    try:
        # An uncompressed blob whose digest is its diff_id is checked by its digest alone: the
        # kernel copies it and the copy is hashed. Anything else is copied and checked in one pass.
        fast = False
        if hasher is None and layer.descriptor.digest == layer.diff_id and layer.opener is not None:
            with layer.opener() as raw, open(tmp, "w+b") as out:
                fast = copy_extent_verified(raw, out, layer.descriptor.digest, layer.descriptor.size, what)
            if fast:
                progress.add(layer.descriptor.size)
        if not fast:
            with layer.open_blob(what) as src, open(tmp, "wb") as out:
                for data in chunks(src):
                    out.write(data)
                    if hasher:
                        hasher.update(data)
                    progress.add(len(data))
        if pause is not None:
            pause(tmp)
        if hasher:
            diff_id = hasher.digest()
            if diff_id != layer.diff_id:
                raise DigestMismatch(f"{what}: uncompressed content is {diff_id}, the config says {layer.diff_id}")
        elif layer.descriptor.digest != layer.diff_id:
            raise DigestMismatch(
                f"{what}: uncompressed layer {layer.descriptor.digest} does not match its diff_id {layer.diff_id}"
            )
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _link_indexed(layer: Layer, dest: str, image: Image, made: Optional[Any],
                  pause: Optional[Callable[[str], None]]) -> "Optional[LayerIndex]":
    """The index of a layer whose file was hashed and indexed as it was written (`made`: a
    daemon.Streamed), linked to `dest`; None (nothing done) unless the layer is read from that
    very file (the same device, inode and size as when it was written, its size the layer's),
    uncompressed, and links can be made."""
    from lamina.analyze.scan import index_of

    d = layer.descriptor
    if made is None or layer.path is None or layer.compression != "none" or d.digest != layer.diff_id:
        return None
    tmp = dest + ".tmp"
    try:
        os.link(layer.path, tmp)
        st = os.stat(tmp)
        if (st.st_dev, st.st_ino, st.st_size) != made.identity or st.st_size != d.size:  # another file
            os.unlink(tmp)
            return None
    except OSError:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        return None
    try:
        if pause is not None:
            pause(tmp)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return index_of(layer, image.source, image.layers[: layer.index], str(image.platform), made.content)


def copy_and_index(layer: Layer, dest: str, what: str, progress: Progress, image: Image,
                   pause: Optional[Callable[[str], None]] = None, made: Optional[Any] = None) -> "LayerIndex":
    """Store a layer blob at `dest` and index it (the scan: entries, content hashes, ELF facts) in
    one pass over its bytes, checking its digest, size and diff_id on the way. A blob that is a
    file of its own (a layout's blob, an unpacked export's layer) is hard-linked when it can be and
    then read once; any other is read once from its source while it is written. `pause`: see
    copy_layer_verified. `made`: see _link_indexed (then the layer is not read at all)."""
    from lamina.analyze.scan import scan_layer

    linked_index = _link_indexed(layer, dest, image, made, pause)
    if linked_index is not None:
        progress.add(layer.descriptor.size)
        return linked_index

    opener = layer.opener_or_file()
    if opener is None:
        raise InvalidSource(f"{what}: blob {layer.descriptor.digest} has no bytes in this source")
    d = layer.descriptor
    tmp = dest + ".tmp"
    try:
        linked = False
        if layer.path is not None:
            try:
                os.link(layer.path, tmp)
                linked = True
            except OSError:  # another file system, or links not allowed: copy it
                pass
        with contextlib.nullcontext(None) if linked else open(tmp, "wb") as out:
            raw = open(tmp, "rb") if linked else opener()
            blob = io.BufferedReader(VerifiedReader(TeeReader(raw, out, progress.add), d.digest, d.size, what), CHUNK)
            with blob:
                if layer.compression == "none":  # its digest is its diff_id: one hash checks both
                    if d.digest != layer.diff_id:
                        raise DigestMismatch(f"{what}: uncompressed layer {d.digest} does not match its diff_id "
                                             f"{layer.diff_id}")
                    plain = blob
                else:
                    plain = io.BufferedReader(UncompressedCheckingReader(decompressed(blob, layer.compression),
                                                                         layer.diff_id, what), CHUNK)
                index = scan_layer(layer, image.source, image.layers[: layer.index], str(image.platform), plain)
                for _ in chunks(blob):  # whatever follows the compressed stream: stored and verified too
                    pass
        if pause is not None:
            pause(tmp)
        os.replace(tmp, dest)
    except BaseException as e:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        if isinstance(e, InvalidSource) and what not in str(e):  # a decompressor's error: say which layer
            raise type(e)(f"{what}: {e}") from e
        raise
    return index


def extract(image: Image, layers: Sequence[Layer], out_dir: str, selector: str, index: bool = False,
            pause: Optional[Callable[[str], None]] = None, fetch_from: Optional[str] = None,
            contents: Optional[Mapping[str, Any]] = None) -> Selection:
    """Write a bundle of `layers` (chosen from `image`) at `out_dir`, atomically.

    With `index`, the bundle also holds INDEX_FILE: the scan index of each selected layer, made in
    the same pass that copies it (what `lamina scan` of the bundle would write); `contents`: layers
    indexed as they were written (by diff_id; see daemon.export_unpacked) are linked, not read.
    `pause`: see copy_layer_verified."""
    copies = tuple(sorted(set(c for l in layers for c in l.copies)))  # not the engine's order: the bundle's bytes
    selection = Selection(image.source, selector, tuple(l.index for l in layers), copies, fetch_from)
    if fetch_from and index:
        raise InvalidSource(f"{image.source}: a shallow bundle holds no layer bytes to index")
    copied = () if fetch_from else layers  # shallow: the layers stay where `fetch_from` says
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".lamina-tmp-", dir=parent)
    progress = Progress(f"extracting {len(copied)} layer(s) of {image.source}", sum(l.descriptor.size for l in copied))
    try:
        store = BlobDir(tmp)
        indexes = []
        for layer in copied:
            dest = store.path(layer.descriptor.digest)
            what = f"{image.source}: layer {layer.index} ({layer.descriptor.digest})"
            if os.path.exists(dest):  # the same blob twice in one image
                if index:
                    from lamina.analyze.scan import scan_layer

                    again = dataclasses.replace(layer, opener=None, path=dest)
                    indexes.append(scan_layer(again, image.source, image.layers[: layer.index], str(image.platform)))
                continue
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if index:
                indexes.append(copy_and_index(layer, dest, what, progress, image, pause,
                                              (contents or {}).get(layer.diff_id)))  # type: ignore[arg-type]
            else:
                copy_layer_verified(layer, dest, what, progress, pause)
        if index:
            from lamina.analyze.index import write_index
            from lamina.pkgdb import databases_in_index

            write_index(indexes, os.path.join(tmp, INDEX_FILE))
            selection = dataclasses.replace(selection, package_databases=any(
                databases_in_index([e.path for e in i.entries]) for i in indexes))
        # The manifest of the whole source image (media types mapped to OCI, digests unchanged).
        manifest_desc = image.manifest_descriptor
        store.put_bytes(image.config_descriptor.digest, image.config_bytes)
        store.put_bytes(manifest_desc.digest, image.manifest_bytes)
        files = dict(layout_files(manifest_desc, ()))
        files[SELECTION_FILE] = json.dumps(selection.to_json(image), indent=2, sort_keys=True).encode() + b"\n"
        for name, data in files.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
        replace_path(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        progress.close()
    return selection

