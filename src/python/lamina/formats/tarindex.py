"""Random access to the members of an uncompressed tar file, refusing entries that escape its root."""
from __future__ import annotations

import posixpath
import tarfile
from dataclasses import dataclass
from typing import BinaryIO, Optional

from lamina.blobs import Window
from lamina.errors import InvalidSource, UnsafeArchive


def safe_member_path(name: str, archive: str) -> str:
    """A tar member name made relative and normalized; UnsafeArchive if it leaves the root."""
    if name.startswith("/"):
        raise UnsafeArchive(f"{archive}: entry {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"{archive}: entry {name!r} escapes the archive with '..'")
    return "/".join(parts)


@dataclass(frozen=True)
class Member:
    name: str
    offset: int
    size: int


class TarIndex:
    """Regular-file members of a tar archive by name; symlinks resolved inside the archive."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._files: dict[str, Member] = {}
        links: dict[str, str] = {}
        try:
            with tarfile.open(path, mode="r:") as tf:
                for info in tf:
                    name = safe_member_path(info.name, path)
                    if info.isreg():
                        self._files[name] = Member(name, info.offset_data, info.size)
                    elif info.issym() or info.islnk():
                        links[name] = _link_target(path, info, name)
        except tarfile.TarError as e:
            raise InvalidSource(f"{path}: not a readable tar archive ({e})") from e
        except EOFError as e:
            raise InvalidSource(f"{path}: truncated tar archive") from e
        for name in links:
            target = name
            for _ in range(16):
                if target in self._files:
                    self._files[name] = Member(name, self._files[target].offset, self._files[target].size)
                    break
                if target not in links:
                    break
                target = links[target]

    def names(self) -> list[str]:
        return sorted(self._files)

    def get(self, name: str) -> Optional[Member]:
        return self._files.get(name)

    def member(self, name: str, what: str) -> Member:
        """The member at `name` (a path relative to the archive root, as manifests write it)."""
        member = self._files.get(safe_member_path(name, self.path))
        if member is None:
            raise InvalidSource(f"{self.path}: {what} {name!r} is not in the archive")
        return member

    def read(self, name: str, what: str, limit: int = 64 << 20) -> bytes:
        member = self.member(name, what)
        if member.size > limit:
            raise InvalidSource(f"{self.path}: {what} {name!r} is {member.size} bytes, too large")
        with self.open(member) as f:
            return f.read()

    def open(self, member: Member) -> BinaryIO:
        f = open(self.path, "rb")
        f.seek(member.offset)
        return Window(f, member.size, owns=True)  # type: ignore[return-value]

    def head(self, member: Member, n: int = 4) -> bytes:
        with self.open(member) as f:
            return f.read(n)


def _link_target(archive: str, info: tarfile.TarInfo, name: str) -> str:
    """The archive path a link points to; UnsafeArchive when it points outside the archive."""
    target = info.linkname
    if target.startswith("/"):
        raise UnsafeArchive(f"{archive}: link {info.name!r} points to absolute path {target!r}")
    if info.issym():
        target = posixpath.join(posixpath.dirname(name), target)
    target = posixpath.normpath(target)
    if target == ".." or target.startswith("../"):
        raise UnsafeArchive(f"{archive}: link {info.name!r} points outside the archive ({info.linkname!r})")
    return target
