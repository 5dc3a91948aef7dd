"""Writers of any Image, read or composed: OCI layout directory, OCI archive, `docker load` archive.

All are atomic (written beside the target under a temporary name, then renamed) and deterministic
(sorted tar entries, fixed headers), and they copy layer bytes verbatim, checking each digest (and
the diff_id of a layer no one has verified yet) in the same pass.
"""
from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from typing import BinaryIO, Optional

from lamina.blobs import (
    CHUNK,
    DiffIdCheckingReader,
    TeeReader,
    VerifiedReader,
    chunks,
    copy_extent,
    copy_extent_verified,
    fsync_outputs,
)
from lamina.errors import InvalidSource, SpecError
from lamina.formats.oci_layout import layout_files
from lamina.formats.store import BlobDir, blob_path, replace_path
from lamina.image import Image, Layer
from lamina.index import ImageIndex
from lamina.model import Descriptor, canonical_json
from lamina.progress import NoProgress, Progress

FORMATS = ("docker-archive", "oci", "oci-archive")


def _layer_bytes(image: "Image | ImageIndex") -> int:
    return sum(l.descriptor.size for l in image.unique_layers())


def _small_blobs(image: "Image | ImageIndex") -> tuple[Descriptor, dict[str, bytes]]:
    """What index.json names (the manifest, or a multi-platform image's index) and the small
    blobs (configs, manifests, the index) by digest."""
    if isinstance(image, Image):
        return image.manifest_descriptor, {image.config_descriptor.digest: image.config_bytes,
                                           image.manifest_descriptor.digest: image.manifest_bytes}
    return image.descriptor, image.small_blobs()


def placeable_blob(layer: Layer) -> Optional[str]:
    """The path of a verified layer's blob when it is a file named as an OCI layout names it
    (`<dir>/blobs/<algorithm>/<hex>`, relative to the working directory), which a caller can put
    into a layout as it is; None for any other."""
    if not layer.verified_by or layer.path is None or os.path.isabs(layer.path):
        return None
    algorithm, _, hex_ = layer.descriptor.digest.partition(":")
    path = os.path.normpath(layer.path)
    parts = path.split(os.sep)
    if len(parts) < 4 or parts[-3:] != ["blobs", algorithm, hex_] or ".." in parts:
        return None
    return path if os.path.isfile(path) and os.path.getsize(path) == layer.descriptor.size else None


def write_oci_layout(image: "Image | ImageIndex", out_dir: str, progress: Optional[Progress] = None,
                     placed: Optional[list] = None) -> None:
    """An OCI layout directory at `out_dir`, replacing any there; blobs already there are reused.

    With `placed` (a list), a verified layer whose blob is already a layout's file (see
    placeable_blob) is not written: {"digest", "path"} of it is appended to `placed`, and the caller
    puts that file at `out_dir`/blobs/<algorithm>/<hex> (Pants merges the digest it already holds:
    no byte is read or hashed again)."""
    progress = progress or NoProgress()
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".lamina-tmp-", dir=parent)
    try:
        store = BlobDir(tmp)
        old = BlobDir(out_dir) if os.path.isdir(out_dir) else None
        for layer in image.unique_layers():
            d = layer.descriptor
            outside = placeable_blob(layer) if placed is not None else None
            if outside is not None:
                placed.append({"digest": d.digest, "path": outside})
                progress.add(d.size)
                continue
            reuse = old.path(d.digest) if old else None
            if reuse and os.path.isfile(reuse) and os.path.getsize(reuse) == d.size:
                store.put(d, None, reuse, f"{out_dir}: layer {d.digest}", trusted=True)
            else:
                trusted = bool(layer.verified_by)
                store.put(d, layer.opener, layer.path, layer.what, trusted,
                          None if trusted else (layer.compression, layer.diff_id))
            progress.add(d.size)
        top, small = _small_blobs(image)
        for digest, data in small.items():
            store.put_bytes(digest, data)
        for name, data in layout_files(top, image.tags).items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
        replace_path(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        progress.close()


USTAR_MAX_SIZE = 8**11 - 1  # the largest size a ustar header's 11 octal digits hold: 8 GiB - 1


def header_bytes(info: tarfile.TarInfo) -> bytes:
    """The header of one member of the tars lamina writes: ustar; a member of 8 GiB or more (which
    ustar cannot hold) in GNU format, whose size field holds it as a base-256 number, as GNU tar
    writes it (Docker's and containerd's archive/tar read it, so `docker load` does; so do GNU tar
    and Python's tarfile). Members under 8 GiB get the same bytes as ever."""
    fmt = tarfile.USTAR_FORMAT if info.size <= USTAR_MAX_SIZE else tarfile.GNU_FORMAT
    return info.tobuf(fmt, tarfile.ENCODING, "surrogateescape")


def _tarinfo(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    return info


class _TarWriter:
    """A plain (ustar; GNU for a member of 8 GiB or more) tar written straight to a file, as tarfile's "w" mode writes it (headers,
    512-byte padding, two zero blocks, a whole last record), but with layer bytes copied by the
    kernel where it can."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.offset = 0

    def _header(self, info: tarfile.TarInfo) -> None:
        buf = header_bytes(info)
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
            # A blob someone already verified (a bundle lamina extract wrote) is copied by the
            # kernel as it is, its size checked; any other is hashed as it is written.
            if layer.verified_by and not check_diff_id:
                copied = copy_extent(raw, self.f, d.size, what)
            else:
                copied = not check_diff_id and copy_extent_verified(raw, self.f, d.digest, d.size, what)
            if copied:
                progress.add(d.size)
                raw.close()
                raw = None
            else:
                stream = io.BufferedReader(VerifiedReader(TeeReader(raw, None, progress.add), d.digest, d.size, what), CHUNK)
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


def _write_tar(image: "Image | ImageIndex", out_path: str, docker: bool, progress: Optional[Progress]) -> None:
    progress = progress or NoProgress()
    top, blobs = _small_blobs(image)
    small: dict[str, bytes] = dict(layout_files(top, image.tags))
    small.update((blob_path(digest), data) for digest, data in blobs.items())
    if docker:
        if not isinstance(image, Image):
            raise SpecError(f"{out_path}: a docker-archive holds one platform, and this image has "
                            f"{len(image.images)}; write oci or oci-archive, or compose one platform")
        config = image.config_descriptor
        small["manifest.json"] = canonical_json([{
            "Config": blob_path(config.digest),
            "RepoTags": list(image.tags),
            "Layers": [blob_path(l.descriptor.digest) for l in image.layers],
        }])
    layers = {blob_path(l.descriptor.digest): l for l in image.unique_layers()}
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
                layer = layers[name]
                d = layer.descriptor
                opener = layer.opener_or_file()
                if opener is None:
                    raise InvalidSource(f"{layer.what}: blob {d.digest} has no bytes in its source")
                check_diff_id = not layer.verified_by and (layer.compression, layer.diff_id) != ("none", d.digest)
                tar.add_blob(_tarinfo(name, d.size), layer, opener, check_diff_id, layer.what, progress)
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


def write_oci_archive(image: "Image | ImageIndex", out_path: str, progress: Optional[Progress] = None) -> None:
    _write_tar(image, out_path, docker=False, progress=progress)


def write_docker_archive(image: Image, out_path: str, progress: Optional[Progress] = None) -> None:
    """A tar `docker load` reads (manifest.json with RepoTags), which is also an OCI layout."""
    _write_tar(image, out_path, docker=True, progress=progress)


def write(image: "Image | ImageIndex", fmt: str, out: str, progress_label: str = "",
          placed: Optional[list] = None) -> None:
    """`image` (or a multi-platform ImageIndex: oci and oci-archive only) in `fmt` at `out`.
    `placed`: see write_oci_layout (oci only)."""
    progress = Progress(progress_label or f"writing {os.path.basename(out)}", _layer_bytes(image))
    if placed is not None and fmt != "oci":
        raise SpecError(f"{out}: only an oci layout can leave its layer blobs for the caller to place, not {fmt}")
    if fmt == "oci":
        write_oci_layout(image, out, progress, placed)
    elif fmt == "oci-archive":
        write_oci_archive(image, out, progress)
    elif fmt == "docker-archive":
        if not isinstance(image, Image):
            raise SpecError(f"{out}: a docker-archive holds one platform, and this image has {len(image.images)}; "
                            "write oci or oci-archive, or compose one platform")
        write_docker_archive(image, out, progress)
    else:
        raise ValueError(f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}")



