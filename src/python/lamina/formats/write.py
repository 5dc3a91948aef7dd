"""Writers of a composed image: OCI layout directory, OCI archive, `docker load` archive.

All are atomic (written beside the target under a temporary name, then renamed) and deterministic
(sorted tar entries, fixed headers), and they copy layer bytes verbatim, checking each digest.
"""
from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from typing import BinaryIO, Iterator, Optional

from lamina.blobs import CHUNK, DiffIdCheckingReader, VerifiedReader, chunks, copy_extent_verified, fsync_outputs
from lamina.compose import ComposedImage
from lamina.errors import InvalidSource
from lamina.formats.oci_layout import layout_files
from lamina.formats.store import BlobDir, blob_path, replace_path
from lamina.image import Layer
from lamina.model import canonical_json
from lamina.progress import NoProgress, Progress

FORMATS = ("docker-archive", "oci", "oci-archive")


def _unique_layers(image: ComposedImage) -> Iterator[tuple[Layer, bool]]:
    seen = set()
    for layer, trusted in zip(image.layers, image.trusted):
        if layer.descriptor.digest not in seen:
            seen.add(layer.descriptor.digest)
            yield layer, trusted


def _what(image: ComposedImage, layer: Layer) -> str:
    """How a layer is named in errors: its source image, its index there and its digest."""
    source = ""
    for i, l in enumerate(image.layers):
        if l is layer and i < len(image.sources):
            source = image.sources[i]
            break
    where = f"{source}: " if source else ""
    if layer.index < 0:  # a layer lamina made, of no source image
        return f"{where}layer {layer.descriptor.digest}"
    return f"{where}layer {layer.index} ({layer.descriptor.digest})"


def _layer_bytes(image: ComposedImage) -> int:
    return sum(l.descriptor.size for l, _ in _unique_layers(image))


def write_oci_layout(image: ComposedImage, out_dir: str, progress: Optional[Progress] = None) -> None:
    """An OCI layout directory at `out_dir`, replacing any there; blobs already there are reused."""
    progress = progress or NoProgress()
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".lamina-tmp-", dir=parent)
    try:
        store = BlobDir(tmp)
        old = BlobDir(out_dir) if os.path.isdir(out_dir) else None
        for layer, trusted in _unique_layers(image):
            d = layer.descriptor
            reuse = old.path(d.digest) if old else None
            if reuse and os.path.isfile(reuse) and os.path.getsize(reuse) == d.size:
                store.put(d, None, reuse, f"{out_dir}: layer {d.digest}", trusted=True)
            else:
                store.put(d, layer.opener, layer.path, _what(image, layer), trusted,
                          None if trusted else (layer.compression, layer.diff_id))
            progress.add(d.size)
        store.put_bytes(image.config_descriptor.digest, image.config_bytes)
        store.put_bytes(image.manifest_descriptor.digest, image.manifest_bytes)
        for name, data in layout_files(image.manifest_descriptor, image.tags).items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
        replace_path(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        progress.close()


def _tarinfo(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    return info


class _Counting(io.RawIOBase):
    def __init__(self, raw: BinaryIO, progress: Progress) -> None:
        super().__init__()
        self._raw = raw
        self._progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = self._raw.readinto(buffer) or 0
        self._progress.add(n)
        return n

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


class _TarWriter:
    """A plain (ustar) tar written straight to a file, as tarfile's "w" mode writes it (headers,
    512-byte padding, two zero blocks, a whole last record), but with layer bytes copied by the
    kernel where it can."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.offset = 0

    def _header(self, info: tarfile.TarInfo) -> None:
        buf = info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape")
        self.f.write(buf)
        self.offset += len(buf)

    def _pad(self, size: int) -> None:
        self.offset += size
        rest = size % tarfile.BLOCKSIZE
        if rest:
            self.f.write(tarfile.NUL * (tarfile.BLOCKSIZE - rest))
            self.offset += tarfile.BLOCKSIZE - rest

    def add_bytes(self, info: tarfile.TarInfo, data: bytes = b"") -> None:
        self._header(info)
        self.f.write(data)
        self._pad(len(data))

    def add_blob(self, info: tarfile.TarInfo, layer: Layer, opener, check_diff_id: bool, what: str,  # type: ignore[no-untyped-def]
                 progress: Progress) -> None:
        d = layer.descriptor
        self._header(info)
        raw = opener()
        try:
            if not check_diff_id and copy_extent_verified(raw, self.f, d.digest, d.size, what):
                progress.add(d.size)
                raw.close()
                raw = None
            else:
                stream = io.BufferedReader(VerifiedReader(_Counting(raw, progress), d.digest, d.size, what), CHUNK)
                raw = None  # the stream owns it now
                if check_diff_id:
                    # also check what it decompresses to, as extract does (for an uncompressed
                    # blob the digest already is the diff_id)
                    stream = io.BufferedReader(DiffIdCheckingReader(stream, layer.compression, layer.diff_id, what), CHUNK)
                with stream:
                    for data in chunks(stream):  # verified at its end: digest, size (and diff_id)
                        self.f.write(data)
        finally:
            if raw is not None:
                raw.close()
        self._pad(d.size)

    def close(self) -> None:
        self.f.write(tarfile.NUL * (tarfile.BLOCKSIZE * 2))
        self.offset += tarfile.BLOCKSIZE * 2
        rest = self.offset % tarfile.RECORDSIZE
        if rest:
            self.f.write(tarfile.NUL * (tarfile.RECORDSIZE - rest))


def _write_tar(image: ComposedImage, out_path: str, docker: bool, progress: Optional[Progress]) -> None:
    progress = progress or NoProgress()
    config = image.config_descriptor
    manifest = image.manifest_descriptor
    small: dict[str, bytes] = dict(layout_files(manifest, image.tags))
    small[blob_path(config.digest)] = image.config_bytes
    small[blob_path(manifest.digest)] = image.manifest_bytes
    if docker:
        small["manifest.json"] = canonical_json([{
            "Config": blob_path(config.digest),
            "RepoTags": list(image.tags),
            "Layers": [blob_path(l.descriptor.digest) for l in image.layers],
        }])
    layers = {blob_path(l.descriptor.digest): (l, t) for l, t in _unique_layers(image)}
    names = sorted(set(small) | set(layers))
    parent = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".lamina-tmp-", dir=parent)
    try:
        with os.fdopen(fd, "w+b") as raw:  # read and write: copied blobs are hashed as written
            tar = _TarWriter(raw)
            tar.add_bytes(_tarinfo("blobs/", directory=True))
            tar.add_bytes(_tarinfo("blobs/sha256/", directory=True))
            for name in names:
                if name in small:
                    tar.add_bytes(_tarinfo(name, len(small[name])), small[name])
                    continue
                layer, trusted = layers[name]
                d = layer.descriptor
                what = _what(image, layer)
                if layer.opener is None and layer.path is None:
                    raise InvalidSource(f"{what}: blob {d.digest} has no bytes in its source")
                opener = layer.opener if layer.opener is not None else (lambda p=layer.path: open(p, "rb"))
                check_diff_id = not trusted and (layer.compression, layer.diff_id) != ("none", d.digest)
                tar.add_blob(_tarinfo(name, d.size), layer, opener, check_diff_id, what, progress)
            tar.close()
            raw.flush()
            if fsync_outputs():
                os.fsync(raw.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        progress.close()


def write_oci_archive(image: ComposedImage, out_path: str, progress: Optional[Progress] = None) -> None:
    _write_tar(image, out_path, docker=False, progress=progress)


def write_docker_archive(image: ComposedImage, out_path: str, progress: Optional[Progress] = None) -> None:
    """A tar `docker load` reads (manifest.json with RepoTags), which is also an OCI layout."""
    _write_tar(image, out_path, docker=True, progress=progress)


def write(image: ComposedImage, fmt: str, out: str, progress_label: str = "") -> None:
    progress = Progress(progress_label or f"writing {os.path.basename(out)}", _layer_bytes(image))
    if fmt == "oci":
        write_oci_layout(image, out, progress)
    elif fmt == "oci-archive":
        write_oci_archive(image, out, progress)
    elif fmt == "docker-archive":
        write_docker_archive(image, out, progress)
    else:
        raise ValueError(f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}")



