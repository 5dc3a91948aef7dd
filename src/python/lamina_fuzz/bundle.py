"""The structured fuzz input: several named members in one byte string, with digest tokens resolved.

Raw tar bytes make poor fuzz input for an archive reader: a mutated header fails its checksum and a
mutated manifest names blobs whose digests no longer match, so nothing past the first check is
reached. A bundle keeps the structure out of the mutator's way: the tar (or directory) is built
by code from its members, and `{d:N}`-style tokens in names and content are replaced by the
digest or size of member N, so a mutated config or layer stays consistently named.

Format: members separated by SEP. A member's first line is its header, the rest its content:

    NAME               a regular file
    NAME |gz, |zst     a file whose content is compressed by the harness (its tokens see both forms)
    NAME -> TARGET     a symbolic link
    NAME/              a directory
    @KEY               an option for the target (content: its value), not a file

Tokens, in headers and content: `{d:N}` "sha256:<hex>" of member N's stored content, `{h:N}` its
hex alone, `{s:N}` its size, `{u:N}` the digest of its content before compression. Content may
name earlier members only (N < its own position); a header may also name its own member.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import stat
import tarfile
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

SEP = b"\n%%\n"
MAX_MEMBERS = 64
_TOKEN = re.compile(rb"\{([dhsu]):(\d{1,2})\}")


@dataclass(frozen=True)
class Member:
    name: str
    content: bytes = b""
    kind: str = "file"  # 'file', 'dir' or 'symlink'
    linkname: str = ""
    plain: bytes = b""  # the content before compression (the same bytes when not compressed)


@dataclass(frozen=True)
class Bundle:
    members: tuple[Member, ...]
    options: Mapping[str, str]

    def option(self, key: str) -> Optional[str]:
        return self.options.get(key)


def encode(members: Sequence[tuple[str, bytes]]) -> bytes:
    """Seed bytes from (header, content) pairs, as `decode` reads them."""
    return SEP.join(header.encode("utf-8", "surrogateescape") + b"\n" + content for header, content in members)


def decode(data: bytes) -> Bundle:
    """The members and options a fuzz input describes; any bytes give some bundle."""
    members: list[Member] = []
    options: dict[str, str] = {}
    facts: list[tuple[bytes, bytes]] = []  # (stored, plain) per member, for tokens
    for record in data.split(SEP)[:MAX_MEMBERS]:
        raw_header, _, raw_content = record.partition(b"\n")
        content = _resolve(raw_content, facts, len(facts) - 1)
        header = raw_header.decode("utf-8", "surrogateescape")
        compression = ""
        for suffix in (" |gz", " |zst"):
            if header.endswith(suffix):
                header, compression = header[: -len(suffix)], suffix[2:]
        stored = _compress(content, compression)
        facts.append((stored, content))
        name = _resolve(header.encode("utf-8", "surrogateescape"), facts, len(facts) - 1).decode(
            "utf-8", "surrogateescape")
        if name.startswith("@"):
            options.setdefault(name[1:], content.decode("utf-8", "surrogateescape"))
        elif " -> " in name:
            link_name, _, target = name.partition(" -> ")
            members.append(Member(link_name, kind="symlink", linkname=target))
        elif name.endswith("/") and not content:
            members.append(Member(name, kind="dir"))
        else:
            members.append(Member(name, stored, plain=content))
    return Bundle(tuple(members), options)


def _compress(content: bytes, compression: str) -> bytes:
    if compression == "gz":
        return gzip.compress(content, compresslevel=1, mtime=0)
    if compression == "zst":
        import zstandard

        return zstandard.ZstdCompressor(level=1).compress(content)
    return content


def _resolve(text: bytes, facts: Sequence[tuple[bytes, bytes]], last: int) -> bytes:
    def sub(m: "re.Match[bytes]") -> bytes:
        n = int(m.group(2))
        if n > last:
            return m.group(0)
        stored, plain = facts[n]
        kind = m.group(1)
        if kind == b"s":
            return str(len(stored)).encode()
        hex_ = hashlib.sha256(plain if kind == b"u" else stored).hexdigest().encode()
        return hex_ if kind == b"h" else b"sha256:" + hex_

    return _TOKEN.sub(sub, text)


def write_tar(bundle: Bundle, path: str) -> None:
    """The members as a tar archive, names exactly as given (absolute, '..' and all)."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for m in bundle.members:
            info = tarfile.TarInfo(m.name)
            info.mtime = 0
            if m.kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            elif m.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, m.linkname
                tf.addfile(info)
            else:
                info.size, info.mode = len(m.content), 0o644
                tf.addfile(info, io.BytesIO(m.content))


def write_dir(bundle: Bundle, root: str) -> None:
    """The members as files under `root`. Members whose path would leave `root` (by '..', an
    absolute name or an earlier member's symlink) are left out: the harness never writes outside
    its directory, whatever the input. Symlink targets are written as given."""
    for m in bundle.members:
        parts = [p for p in m.name.split("/") if p not in ("", ".")]
        if not parts or ".." in parts or "\0" in m.name:
            continue
        parent = root
        ok = True
        for part in parts[:-1]:
            parent = os.path.join(parent, part)
            try:
                st = os.lstat(parent)
            except FileNotFoundError:
                os.mkdir(parent)
                continue
            except OSError:
                ok = False
                break
            if not stat.S_ISDIR(st.st_mode):
                ok = False
                break
        if not ok:
            continue
        path = os.path.join(parent, parts[-1])
        try:
            if m.kind == "dir":
                os.mkdir(path)
            elif m.kind == "symlink":
                os.symlink(m.linkname, path)
            else:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as f:
                    f.write(m.content)
        except (OSError, ValueError):
            continue  # already there, a name too long, ...: this member is left out
