"""Deterministic new layers from files: sorted entries, uid/gid 0, mtime 0, gzip with mtime 0; laid on
the layers below as a Dockerfile's COPY writes (through their symlinks, into their directories)."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import posixpath
import stat
import tarfile
from typing import BinaryIO, Optional, Protocol, Sequence

from lamina.errors import SpecError
from lamina.image import Layer
from lamina.model import OCI_LAYER_GZIP, Descriptor, check_digest


class Below(Protocol):
    """The filesystem of the layers a new layer goes on (analyze.stackfs.FileSystem is one)."""

    def place(self, path: str) -> str: ...

    def stat(self, path: str) -> Optional[tuple[str, int, int, int]]: ...  # (kind, mode, uid, gid)


NEW_DIR = (0o755, 0, 0)  # (mode, uid, gid) of a parent directory nothing below has


def _landing(dest: str, below: Optional[Below]) -> tuple[str, dict[str, tuple[int, int, int]]]:
    """(the path the file lands at, {parent directory: (mode, uid, gid) of its entry})."""
    path = posixpath.normpath("/" + dest).lstrip("/")
    if not path or path.startswith(".."):
        raise SpecError(f"file destination {dest!r} is not a path inside the image")
    if below is not None:
        path = below.place(path)  # its parents' symlinks followed: /bin/x lands in /usr/bin/x
        found = below.stat(path)
        if found is not None and found[0] == "dir":
            raise SpecError(f"file destination {dest!r}: /{path} is a directory in the layers below; "
                            "name the file's own path in it")
    dirs: dict[str, tuple[int, int, int]] = {}
    parent = posixpath.dirname(path)
    while parent:
        found = below.stat(parent) if below is not None else None
        if found is not None and found[0] != "dir":
            raise SpecError(f"file destination {dest!r}: /{parent} is a {found[0]} in the layers below, not a "
                            "directory, so nothing can go under it")
        dirs[parent] = (found[1], found[2], found[3]) if found is not None else NEW_DIR
        parent = posixpath.dirname(parent)
    return path, dirs


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


def _info(name: str, kind: bytes, mode: int, size: int = 0, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    return info


def build_files_layer(files: Sequence[tuple[str, str]], out_path: str, below: Optional[Below] = None) -> Layer:
    """A gzip layer at `out_path` holding each (image path, local file); the same files (and layers
    below) give the same bytes.

    With `below`, the filesystem of the layers it goes on, the layer is laid out as a Dockerfile's
    COPY writes: a destination's parent directories are followed through the symlinks below (on a
    usr-merged base /bin/x lands in /usr/bin/x, the /bin symlink kept), and a parent directory that
    exists below is written with its mode and owner there (so /tmp keeps its 1777 and /home/app
    its owner). It must be written, not left out: Docker's overlay2 unpack creates a parent the
    layer lacks as root 0755, and overlayfs shows the upper layer's directory. Parent directories
    that do not exist below are written root:root 0755."""
    wanted: dict[str, str] = {}
    asked: dict[str, str] = {}  # landing path -> the destination that asked for it
    dirs: dict[str, tuple[int, int, int]] = {}
    for dest, src in files:
        path, parents = _landing(dest, below)
        if not os.path.isfile(src):
            raise SpecError(f"file {src!r} for {dest!r} does not exist")
        if path in wanted and wanted[path] != src:
            also = "" if asked[path] == dest else f" (as {asked[path]!r} and {dest!r})"
            raise SpecError(f"two files want the same image path /{path}{also}: {wanted[path]!r} and {src!r}")
        wanted[path] = src
        asked[path] = dest
        dirs.update(parents)
    clash = dirs.keys() & wanted.keys()
    if clash:
        raise SpecError(f"/{sorted(clash)[0]} is both a file and a directory in the new layer")
    with open(out_path, "wb") as raw:
        compressed = _HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=6) as gz:  # type: ignore[arg-type]
            plain = _HashingWriter(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
                for path in sorted(dirs.keys() | wanted.keys()):
                    if path in dirs:
                        mode, uid, gid = dirs[path]
                        tf.addfile(_info(path + "/", tarfile.DIRTYPE, mode, uid=uid, gid=gid))
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


def write_files_layer_dir(files: Sequence[tuple[str, str]], out_dir: str, below: Optional[Below] = None) -> Layer:
    """`build_files_layer` (on `below`) into `out_dir`, beside a description of it (digest, size, diff_id,
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
        made = build_files_layer(files, tmp_blob, below)
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
          and isinstance(meta.get("size"), int) and not isinstance(meta.get("size"), bool) and meta["size"] >= 0
          and isinstance(meta.get("history"), list) and all(isinstance(h, dict) for h in meta["history"]))
    if not ok:
        raise SpecError(f"files_layer {path!r}: {FILES_LAYER_META} is not a description `lamina files-layer` writes")
    for key in ("digest", "diff_id"):  # they become blob paths in the written image: digests, nothing else
        check_digest(meta.get(key), f"files_layer {path!r}: {FILES_LAYER_META} {key}")
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



