"""Compressed, stable layers for distribution: an uncompressed layer (from `docker save` or the
engine) is sent to a registry compressed, deterministically, and the image that is pushed names the
compressed blobs. The config's diff_ids do not change; local outputs keep the uncompressed bytes.

`compress_layer` makes one layer's compressed blob in one streaming pass (the source checked
against its digest as it is read) into a directory: `blob` and `compressed.json`, its descriptor.
The Pants plugin runs it once per layer, keyed on the layer's bytes, so the result is cached and
re-publishing an unchanged layer gives the same digest. `distributable` swaps an image's
uncompressed layers for their compressed forms.

Determinism: gzip is written with a fixed header (no name, mtime 0, OS 255) by the interpreter's
zlib at level 6; zstd by the pinned `zstandard` wheel's bundled libzstd at level 3, one frame, no
checksum. The same zlib (or zstandard) version makes the same bytes on any machine."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Callable, Mapping, Optional

from lamina.blobs import CHUNK, chunks
from lamina.formats.store import replace_path
from lamina.errors import InvalidSource, LaminaError
from lamina.image import Image, Layer
from lamina.model import (
    COMPRESSION_MEDIA_TYPE,
    OCI_LAYER,
    Descriptor,
    check_digest,
    expect_dict,
    oci_layer_media_type,
    parse_json,
)
from lamina.progress import NoProgress, Progress

COMPRESSIONS = ("gzip", "zstd")
BLOB_FILE = "blob"
DESCRIPTOR_FILE = "compressed.json"
GZIP_LEVEL = 6
ZSTD_LEVEL = 3
# A fixed gzip member header: magic, deflate, no flags, mtime 0, no extra flags, OS unknown.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


class CompressError(LaminaError):
    pass


@dataclass(frozen=True)
class Compressed:
    """A layer's compressed form: its descriptor, the diff_id it decompresses to, and its file."""

    descriptor: Descriptor
    diff_id: str
    path: str
    # Made by this process from bytes it checked (compress_layer), rather than read from a
    # directory someone else wrote: only then is it sent without checking its diff_id again.
    vouched: bool = False
    compressor: str = ""  # what made the bytes (e.g. "zlib 1.2.13"): the same one makes the same bytes

    def to_json(self) -> dict:
        d = self.descriptor
        return {"descriptor": Descriptor(d.media_type, d.digest, d.size).to_json(), "diff_id": self.diff_id,
                "compressor": self.compressor}


def wants_compression(layer: Layer) -> bool:
    """Whether `layer` is sent compressed: an uncompressed, distributable layer."""
    return layer.compression == "none" and oci_layer_media_type(layer.descriptor.media_type) == OCI_LAYER


class _Gzip:
    name = f"zlib {zlib.ZLIB_RUNTIME_VERSION} level {GZIP_LEVEL}"

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, 8)
        self._crc = 0
        self._size = 0

    def start(self) -> bytes:
        return _GZIP_HEADER

    def feed(self, data: bytes) -> bytes:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        return self._deflate.compress(data)

    def finish(self) -> bytes:
        return self._deflate.flush() + struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF)


class _Zstd:
    def __init__(self) -> None:
        import zstandard

        libzstd = ".".join(str(v) for v in zstandard.ZSTD_VERSION)
        self.name = f"zstandard {zstandard.__version__} libzstd {libzstd} level {ZSTD_LEVEL}"
        params = zstandard.ZstdCompressionParameters.from_level(ZSTD_LEVEL, write_checksum=0, write_content_size=0,
                                                                threads=0)
        self._obj = zstandard.ZstdCompressor(compression_params=params).compressobj()

    def start(self) -> bytes:
        return b""

    def feed(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def finish(self) -> bytes:
        return self._obj.flush()


def _compressor(compression: str):  # type: ignore[no-untyped-def]
    if compression == "gzip":
        return _Gzip()
    if compression == "zstd":
        return _Zstd()
    raise CompressError(f"unknown compression {compression!r}; choose one of {', '.join(COMPRESSIONS)}")


def compress_stream(src: BinaryIO, dst: BinaryIO, compression: str,
                    progress: Optional[Progress] = None) -> tuple[str, int, str]:
    """Compress `src` into `dst`; the (digest, size) of what was written, and what wrote it."""
    progress = progress or NoProgress()
    comp = _compressor(compression)
    digest = hashlib.sha256()
    size = 0

    def put(data: bytes) -> None:
        nonlocal size
        if data:
            digest.update(data)
            dst.write(data)
            size += len(data)

    put(comp.start())
    for chunk in chunks(src, CHUNK):
        put(comp.feed(chunk))
        progress.add(len(chunk))
    put(comp.finish())
    return "sha256:" + digest.hexdigest(), size, comp.name


def compress_layer(layer: Layer, compression: str, out_dir: str,
                   progress: Optional[Progress] = None) -> Compressed:
    """Write `layer`'s compressed blob and descriptor into `out_dir` (created; replaced whole, never
    left half-written). The layer's bytes are checked against its digest as they are read: a layer
    that is not what its digest says leaves nothing."""
    if not wants_compression(layer):
        raise CompressError(f"{layer.what}: only uncompressed, distributable layers are compressed "
                            f"(this one is {layer.descriptor.media_type})")
    parent = os.path.dirname(os.path.abspath(out_dir)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".lamina-tmp-", dir=parent)
    try:
        blob = os.path.join(tmp, BLOB_FILE)
        with layer.open_blob() as src, open(blob, "wb") as dst:
            digest, size, compressor = compress_stream(src, dst, compression, progress)
            for _ in chunks(src):  # to the end: the digest is checked there
                pass
        descriptor = Descriptor(COMPRESSION_MEDIA_TYPE[compression], digest, size)
        result = Compressed(descriptor, layer.diff_id, os.path.join(out_dir, BLOB_FILE), True, compressor)
        with open(os.path.join(tmp, DESCRIPTOR_FILE), "w") as f:
            json.dump(result.to_json(), f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o755)
        replace_path(tmp, out_dir)
        return result
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_compressed(directory: str) -> Compressed:
    """A directory `compress_layer` wrote. Its blob's size is checked here; its digest by whoever
    reads it (a registry checks what it is sent)."""
    path = os.path.join(directory, DESCRIPTOR_FILE)
    try:
        with open(path, "rb") as f:
            data = expect_dict(parse_json(f.read(), path), path)
    except OSError as e:
        raise InvalidSource(f"{directory}: not a compressed layer ({e.strerror})") from None
    descriptor = Descriptor.from_json(data.get("descriptor"), f"{path}: descriptor")
    diff_id = check_digest(data.get("diff_id"), f"{path}: diff_id")
    blob = os.path.join(directory, BLOB_FILE)
    try:
        size = os.path.getsize(blob)
    except OSError as e:
        raise InvalidSource(f"{directory}: compressed layer has no blob ({e.strerror})") from None
    if size != descriptor.size:
        raise InvalidSource(f"{blob}: {size} bytes, its descriptor says {descriptor.size}")
    if descriptor.media_type not in COMPRESSION_MEDIA_TYPE.values() or descriptor.media_type == COMPRESSION_MEDIA_TYPE["none"]:
        raise InvalidSource(f"{path}: {descriptor.media_type!r} is not a compressed layer media type")
    compressor = data.get("compressor", "")
    return Compressed(descriptor, diff_id, blob, False, compressor if isinstance(compressor, str) else "")


def distributable(image: Image, compressed: Mapping[str, Compressed]) -> Image:
    """`image` with each uncompressed layer named in `compressed` (keyed by the layer's digest)
    replaced by its compressed form: same diff_id, config and annotations, other manifest. Its
    bytes are read from the compressed file and, unless this process made it, checked against the
    diff_id as they are sent (the registry checks the digest)."""
    layers = []
    for layer in image.layers:
        form = compressed.get(layer.descriptor.digest) if wants_compression(layer) else None
        if form is None:
            layers.append(layer)
            continue
        if form.diff_id != layer.diff_id:
            raise InvalidSource(f"{layer.what}: its compressed form {form.path} is of diff_id {form.diff_id}")
        d = form.descriptor
        layers.append(dataclasses.replace(
            layer, descriptor=Descriptor(d.media_type, d.digest, d.size, layer.descriptor.annotations),
            opener=None, path=form.path, verified_by="lamina compress" if form.vouched else ""))
    return dataclasses.replace(image, layers=tuple(layers), manifest_media_type="")


def compress_missing(image: Image, compression: str, scratch_dir: str,
                     have: Optional[Mapping[str, Compressed]] = None,
                     progress: Callable[[str, int], Progress] = lambda label, total: NoProgress()) -> dict[str, Compressed]:
    """`have` plus a compressed form, made under `scratch_dir`, of every layer of `image` that is
    sent compressed and is not in `have`."""
    out = dict(have or {})
    for layer in image.unique_layers():
        if not wants_compression(layer) or layer.descriptor.digest in out:
            continue
        if not layer.has_bytes:
            continue  # pushed as it is: the registry must already have it
        bar = progress(f"compressing {layer.what}", layer.descriptor.size)
        try:
            out[layer.descriptor.digest] = compress_layer(
                layer, compression, os.path.join(scratch_dir, layer.descriptor.hex), bar)
        finally:
            bar.close()
    return out
