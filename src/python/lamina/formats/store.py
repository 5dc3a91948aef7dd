"""Where blobs live: a directory in OCI layout form or a tar archive; plus writing blob directories."""
from __future__ import annotations

import os
import shutil
from typing import Optional, Protocol

from lamina.blobs import Opener, chunks, copy_extent_verified, copy_stream, link_or_copy, verified
from lamina.errors import DigestMismatch, InvalidSource
from lamina.formats.tarindex import TarIndex, safe_member_path
from lamina.model import Descriptor, check_digest

SMALL_LIMIT = 64 << 20  # manifests, configs and indexes larger than this are refused


def blob_path(digest: str) -> str:
    """blobs/sha256/<hex>: the one place a digest becomes a path. Refuses anything but a
    well-formed sha256 digest, so that no name read from data ("sha256:../../x") leaves blobs/."""
    check_digest(digest, "blob name")
    algo, hex_ = digest.split(":", 1)
    return f"blobs/{algo}/{hex_}"


class BlobSource(Protocol):
    where: str

    def has_file(self, name: str) -> bool: ...

    def read_file(self, name: str, what: str) -> bytes: ...

    def blob_opener(self, digest: str) -> Optional[Opener]: ...

    def blob_file(self, digest: str) -> Optional[str]: ...

    def blob_size(self, digest: str) -> Optional[int]: ...


def read_blob(source: BlobSource, desc: Descriptor, what: str) -> bytes:
    """A small blob (manifest, config), checked against its descriptor."""
    if desc.size > SMALL_LIMIT:
        raise InvalidSource(f"{source.where}: {what} {desc.digest} is {desc.size} bytes, too large")
    opener = source.blob_opener(desc.digest)
    if opener is None:
        raise InvalidSource(f"{source.where}: {what} {desc.digest} is missing from the archive")
    with verified(opener, desc.digest, desc.size, f"{source.where}: {what} {desc.digest}") as f:
        return f.read()


class DirSource:
    """An OCI layout directory (or a lamina bundle, which uses the same blobs/ tree)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.where = root

    def _path(self, name: str) -> str:
        return os.path.join(self.root, safe_member_path(name, self.root))

    def has_file(self, name: str) -> bool:
        return os.path.isfile(self._path(name))

    def read_file(self, name: str, what: str) -> bytes:
        path = self._path(name)
        real_root = os.path.realpath(self.root)
        if not os.path.realpath(path).startswith(real_root + os.sep):
            raise InvalidSource(f"{self.root}: {what} {name!r} points outside the layout")
        try:
            if os.path.getsize(path) > SMALL_LIMIT:
                raise InvalidSource(f"{self.root}: {what} {name!r} is too large")
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise InvalidSource(f"{self.root}: {what} {name!r} is missing") from None

    def blob_file(self, digest: str) -> Optional[str]:
        path = os.path.join(self.root, blob_path(digest))
        if not os.path.isfile(path):
            return None
        if not os.path.realpath(path).startswith(os.path.realpath(self.root) + os.sep):
            raise InvalidSource(f"{self.root}: blob {digest} points outside the layout")
        return path

    def blob_opener(self, digest: str) -> Optional[Opener]:
        path = self.blob_file(digest)
        if path is None:
            return None
        return lambda: open(path, "rb")

    def blob_size(self, digest: str) -> Optional[int]:
        path = self.blob_file(digest)
        return os.path.getsize(path) if path else None

    # A `docker save` archive unpacked into a directory (the engine's export stream, see
    # daemon.export_unpacked) is read through these, as TarSource reads one still packed.
    def member_file(self, name: str, what: str) -> str:
        path = self._path(name)
        if not os.path.isfile(path):
            raise InvalidSource(f"{self.root}: {what} {name!r} is not in the archive")
        if not os.path.realpath(path).startswith(os.path.realpath(self.root) + os.sep):
            raise InvalidSource(f"{self.root}: {what} {name!r} points outside the archive")
        return path

    def member_opener(self, name: str, what: str) -> tuple[Opener, int]:
        path = self.member_file(name, what)
        return (lambda: open(path, "rb")), os.path.getsize(path)

    def head(self, name: str) -> bytes:
        with open(self.member_file(name, "layer"), "rb") as f:
            return f.read(4)


class TarSource:
    """A tar archive: an OCI archive or a `docker save` archive."""

    def __init__(self, path: str) -> None:
        self.index = TarIndex(path)
        self.where = path

    def has_file(self, name: str) -> bool:
        return self.index.get(safe_member_path(name, self.where)) is not None

    def read_file(self, name: str, what: str) -> bytes:
        return self.index.read(name, what, SMALL_LIMIT)

    def member_opener(self, name: str, what: str) -> tuple[Opener, int]:
        member = self.index.member(name, what)
        return (lambda: self.index.open(member)), member.size

    def blob_opener(self, digest: str) -> Optional[Opener]:
        member = self.index.get(blob_path(digest))
        if member is None:
            return None
        return lambda: self.index.open(member)

    def blob_file(self, digest: str) -> Optional[str]:
        return None

    def blob_size(self, digest: str) -> Optional[int]:
        member = self.index.get(blob_path(digest))
        return member.size if member else None

    def head(self, name: str) -> bytes:
        return self.index.head(self.index.member(name, "layer"))


class BlobDir:
    """Writes blobs into `root/blobs/sha256/`: skips present ones, links files, copies streams verified."""

    def __init__(self, root: str) -> None:
        self.root = root

    def path(self, digest: str) -> str:
        return os.path.join(self.root, blob_path(digest))

    def put_bytes(self, digest: str, data: bytes) -> None:
        dest = self.path(digest)
        if os.path.isfile(dest) and os.path.getsize(dest) == len(data):
            return
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = dest + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)

    def put(self, desc: Descriptor, opener: Optional[Opener], file: Optional[str], what: str,
            trusted: bool = False, diff_id: Optional[tuple[str, str]] = None) -> None:
        """Store a blob. `file`, when given, is linked; untrusted linked files are hashed once.

        `diff_id`, as (compression, diff_id), is checked in the same pass for untrusted blobs.
        """
        dest = self.path(desc.digest)
        if os.path.isfile(dest) and os.path.getsize(dest) == desc.size:
            return
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = dest + ".tmp"
        if file is not None:
            if os.path.getsize(file) != desc.size:
                raise DigestMismatch(f"{what}: blob has {os.path.getsize(file)} bytes, expected {desc.size}")
            link_or_copy(file, tmp)
            if not trusted:
                try:
                    with verified(lambda: open(tmp, "rb"), desc.digest, desc.size, what, diff_id) as f:
                        for _ in chunks(f):
                            pass
                except BaseException:
                    os.unlink(tmp)
                    raise
        else:
            if opener is None:
                raise InvalidSource(f"{what}: blob {desc.digest} has no bytes in its source")
            try:
                copied = False
                if diff_id is None or diff_id == ("none", desc.digest):  # the digest alone checks it
                    with opener() as raw, open(tmp, "w+b") as out:
                        copied = copy_extent_verified(raw, out, desc.digest, desc.size, what)
                if not copied:
                    with verified(opener, desc.digest, desc.size, what, diff_id) as src, open(tmp, "wb") as out:
                        copy_stream(src, out)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        os.replace(tmp, dest)


def replace_path(tmp: str, out: str) -> None:
    """Put the finished `tmp` (file or directory) at `out`, replacing what was there by renames."""
    if os.path.lexists(out):
        old = tmp + ".old"
        os.rename(out, old)
        os.rename(tmp, out)
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old)
        else:
            os.unlink(old)
    else:
        os.rename(tmp, out)
