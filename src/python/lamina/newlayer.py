"""Deterministic new layers from files: sorted entries, uid/gid 0, mtime 0, gzip with mtime 0."""
from __future__ import annotations

import gzip
import hashlib
import os
import posixpath
import stat
import tarfile
from typing import BinaryIO, Sequence


from lamina.errors import SpecError
from lamina.image import Layer
from lamina.model import OCI_LAYER_GZIP, Descriptor


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through it."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self._out.write(data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()


def _info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build_files_layer(files: Sequence[tuple[str, str]], out_path: str) -> Layer:
    """A gzip layer at `out_path` holding each (image path, local file); the same files give the same bytes."""
    wanted: dict[str, str] = {}
    for dest, src in files:
        path = posixpath.normpath("/" + dest).lstrip("/")
        if not path or path.startswith(".."):
            raise SpecError(f"file destination {dest!r} is not a path inside the image")
        if not os.path.isfile(src):
            raise SpecError(f"file {src!r} for {dest!r} does not exist")
        if path in wanted and wanted[path] != src:
            raise SpecError(f"two files want the same image path /{path}: {wanted[path]!r} and {src!r}")
        wanted[path] = src
    dirs = set()
    for path in wanted:
        parent = posixpath.dirname(path)
        while parent:
            dirs.add(parent)
            parent = posixpath.dirname(parent)
    clash = dirs & set(wanted)
    if clash:
        raise SpecError(f"/{sorted(clash)[0]} is both a file and a directory in the new layer")
    with open(out_path, "wb") as raw:
        compressed = _HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=6) as gz:  # type: ignore[arg-type]
            plain = _HashingWriter(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
                for path in sorted(dirs | set(wanted)):
                    if path in dirs:
                        tf.addfile(_info(path + "/", tarfile.DIRTYPE, 0o755))
                        continue
                    src = wanted[path]
                    executable = os.stat(src).st_mode & stat.S_IXUSR
                    size = os.path.getsize(src)
                    with open(src, "rb") as f:
                        tf.addfile(_info(path, tarfile.REGTYPE, 0o755 if executable else 0o644, size), f)
    digest = "sha256:" + compressed.hash.hexdigest()
    return Layer(
        descriptor=Descriptor(OCI_LAYER_GZIP, digest, compressed.size),
        diff_id="sha256:" + plain.hash.hexdigest(),
        index=-1,
        history=({"created_by": "lamina: files", "comment": f"{len(wanted)} files"},),
        opener=lambda: open(out_path, "rb"),
        path=out_path,
    )


def files_from_dir(root: str, dest: str = "/") -> list[tuple[str, str]]:
    """(image path, local file) for every file under `root`, placed under `dest`."""
    out = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            local = os.path.join(dirpath, name)
            rel = os.path.relpath(local, root).replace(os.sep, "/")
            out.append((posixpath.join(dest, rel), local))
    return out



