"""Deterministic new layers from files: sorted entries, uid/gid 0, mtime 0, gzip with mtime 0."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
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
        source="the new files layer",
        verified_by="lamina: made here",  # hashed as it was written
    )


FILES_LAYER_BLOB = "files-layer.tar.gz"
FILES_LAYER_META = "files-layer.json"


def write_files_layer_dir(files: Sequence[tuple[str, str]], out_dir: str) -> Layer:
    """`build_files_layer` into `out_dir`, beside a description of it (digest, size, diff_id,
    history), so that `compose` can take the layer as it is (spec key "files_layer") instead of
    packing the files again. The description is written last: a directory without it is not a
    files layer."""
    if not files:
        raise SpecError("no files: a files layer needs at least one (compose adds no layer for no files)")
    os.makedirs(out_dir, exist_ok=True)
    meta_path = os.path.join(out_dir, FILES_LAYER_META)
    if os.path.lexists(meta_path):
        os.unlink(meta_path)  # until the new description is written, the directory is not a files layer
    blob = os.path.join(out_dir, FILES_LAYER_BLOB)
    # A new file, then renamed: an image composed earlier in `oci` format may hard-link the old blob.
    tmp_blob = blob + ".tmp"
    try:
        made = build_files_layer(files, tmp_blob)
        os.replace(tmp_blob, blob)
    except BaseException:
        if os.path.lexists(tmp_blob):
            os.unlink(tmp_blob)
        raise
    layer = dataclasses.replace(made, opener=lambda: open(blob, "rb"), path=blob)
    d = layer.descriptor
    meta = {"mediaType": d.media_type, "digest": d.digest, "size": d.size, "diff_id": layer.diff_id,
            "history": [dict(h) for h in layer.history]}
    tmp = meta_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, meta_path)
    return layer


def read_files_layer_dir(path: str) -> Layer:
    """The layer `write_files_layer_dir` made in `path`. Its bytes are checked against the recorded
    digest and size when they are read."""
    meta_path = os.path.join(path, FILES_LAYER_META)
    blob = os.path.join(path, FILES_LAYER_BLOB)
    try:
        with open(meta_path, "rb") as f:
            meta = json.loads(f.read())
    except FileNotFoundError:
        raise SpecError(f"files_layer {path!r} has no {FILES_LAYER_META}: make it with `lamina files-layer`") from None
    except (OSError, ValueError, RecursionError) as e:
        raise SpecError(f"files_layer {path!r}: cannot read {FILES_LAYER_META}: {e}") from None
    ok = (isinstance(meta, dict) and meta.get("mediaType") == OCI_LAYER_GZIP
          and isinstance(meta.get("digest"), str) and str(meta["digest"]).startswith("sha256:")
          and isinstance(meta.get("diff_id"), str) and str(meta["diff_id"]).startswith("sha256:")
          and isinstance(meta.get("size"), int) and isinstance(meta.get("history"), list)
          and all(isinstance(h, dict) for h in meta["history"]))
    if not ok:
        raise SpecError(f"files_layer {path!r}: {FILES_LAYER_META} is not a description `lamina files-layer` writes")
    if not os.path.isfile(blob):
        raise SpecError(f"files_layer {path!r} has no {FILES_LAYER_BLOB}")
    return Layer(
        descriptor=Descriptor(OCI_LAYER_GZIP, meta["digest"], meta["size"]),
        diff_id=meta["diff_id"],
        index=-1,
        history=tuple(meta["history"]),
        opener=lambda: open(blob, "rb"),
        path=blob,
        source=f"files_layer {path}",  # not verified: checked (digest and diff_id) wherever it is read
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



