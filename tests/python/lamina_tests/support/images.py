"""Owns the real source images tests build in the Docker engine: a busybox base and images built FROM it."""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import List, Mapping, Optional, Union

from lamina_tests.support.services import docker

__all__ = [
    "BASE_IMAGE",
    "busybox_applets",
    "busybox_rootfs",
    "build_base_image",
    "build_image",
    "docker_save",
    "image_exists",
    "image_id",
    "saved_tar_layout",
]

# The tag build_base_image() gives the busybox base; FROM it in build_image() Dockerfiles.
BASE_IMAGE = "lamina-test/busybox:latest"

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
# Fixed mtime for everything in the rootfs, so the base layer's content doesn't depend on when
# or where it was built (2000-01-01T00:00:00Z).
_ROOTFS_MTIME = 946684800

PathLike = Union[str, "os.PathLike[str]"]


def _find_busybox() -> Path:
    for candidate in BUSYBOX_CANDIDATES:
        if os.path.isfile(candidate):
            return Path(candidate)
    raise FileNotFoundError(
        "no busybox binary at " + " or ".join(BUSYBOX_CANDIDATES) + " (apt-get install busybox-static)"
    )


def _is_static_elf(path: Path) -> bool:
    """True if the ELF file has no PT_INTERP program header (i.e. needs no dynamic loader)."""
    with open(path, "rb") as f:
        ident = f.read(16)
        if ident[:4] != b"\x7fELF":
            return False
        is64 = ident[4] == 2
        endian = "<" if ident[5] == 1 else ">"
        if is64:
            f.seek(0x20)
            (phoff,) = struct.unpack(endian + "Q", f.read(8))
            f.seek(0x36)
        else:
            f.seek(0x1C)
            (phoff,) = struct.unpack(endian + "I", f.read(4))
            f.seek(0x2A)
        phentsize, phnum = struct.unpack(endian + "HH", f.read(4))
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            (p_type,) = struct.unpack(endian + "I", f.read(4))
            if p_type == 3:  # PT_INTERP
                return False
    return True


def busybox_applets(busybox: Optional[PathLike] = None) -> List[str]:
    """The applet names `busybox --list` prints (sh, echo, cat, ls, test, ...)."""
    exe = str(busybox or _find_busybox())
    out = subprocess.run([exe, "--list"], capture_output=True, check=True, stdin=subprocess.DEVNULL, timeout=30)
    return [name for name in out.stdout.decode().split() if name and "/" not in name and name != "busybox"]


def busybox_rootfs(dir: PathLike) -> Path:
    """Lay out a minimal root filesystem in `dir` (created if needed) and return it.

    It holds the machine's static /bin/busybox as bin/busybox, a bin/NAME -> busybox symlink per
    applet, /etc/passwd and /etc/group with root, /root, and a world-writable sticky /tmp.
    """
    busybox = _find_busybox()
    if not _is_static_elf(busybox):
        raise RuntimeError(
            f"{busybox} is dynamically linked and won't run in a FROM-scratch image; "
            "install the busybox-static package instead of busybox"
        )
    root = Path(dir)
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("bin", "etc", "root", "tmp"):
        (root / sub).mkdir(exist_ok=True)
    target = root / "bin" / "busybox"
    shutil.copyfile(busybox, target)
    os.chmod(target, 0o755)
    for name in busybox_applets(busybox):
        link = root / "bin" / name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink("busybox", link)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    for sub, mode in (("bin", 0o755), ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777)):
        os.chmod(root / sub, mode)
    for f in ("passwd", "group"):
        os.chmod(root / "etc" / f, 0o644)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (_ROOTFS_MTIME, _ROOTFS_MTIME), follow_symlinks=False)
    os.utime(root, (_ROOTFS_MTIME, _ROOTFS_MTIME))
    return root


def image_exists(ref: str) -> bool:
    """True if the engine has an image called `ref`."""
    return docker("image", "inspect", "--format", "{{.Id}}", ref, check=False, timeout=60).returncode == 0


def image_id(ref: str) -> str:
    """The engine's image ID ("sha256:...") for `ref`."""
    return docker("image", "inspect", "--format", "{{.Id}}", ref, timeout=60).stdout.strip()


def _lock_path(tag: str) -> str:
    safe = "".join(c if c.isalnum() else "_" for c in tag)
    return os.path.join(tempfile.gettempdir(), f"lamina-test-image-{safe}.lock")


def build_base_image(tag: str = BASE_IMAGE) -> str:
    """Make sure the engine has the busybox base image as `tag` (built FROM scratch); return the tag.

    Reuses an existing image of that tag. Concurrent test processes serialise on a lock file.
    """
    if image_exists(tag):
        return tag
    with open(_lock_path(tag), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if image_exists(tag):
                return tag
            with tempfile.TemporaryDirectory(prefix="lamina-base-") as ctx:
                busybox_rootfs(Path(ctx) / "rootfs")
                (Path(ctx) / "Dockerfile").write_text('FROM scratch\nCOPY rootfs/ /\nCMD ["/bin/sh"]\n')
                _docker_build(tag, Path(ctx))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return tag


def _safe_relpath(name: str) -> PurePosixPath:
    rel = PurePosixPath(name)
    if rel.is_absolute() or not rel.parts or ".." in rel.parts:
        raise ValueError(f"context file name must be a relative path inside the context: {name!r}")
    return rel


def _docker_build(tag: str, context: Path, extra_args: Optional[List[str]] = None) -> None:
    docker(
        "build",
        "--network",
        "none",
        "--force-rm",
        # fresh layers on every build: a layer left in the engine's build cache by an earlier run (or another test
        # file) would be byte-identical, so Pants' process cache would hit where a test expects fresh work
        "--no-cache",
        "--tag",
        tag,
        "--file",
        str(context / "Dockerfile"),
        *(extra_args or []),
        str(context),
    )


def build_image(
    tag: str,
    dockerfile_text: str,
    context_files: Optional[Mapping[str, bytes]] = None,
    *,
    build_args: Optional[Mapping[str, str]] = None,
) -> str:
    """`docker build --network none -t TAG` a context made of `dockerfile_text` and `context_files`.

    `context_files` maps relative POSIX paths to contents (parent directories are created).
    RUN steps work but have no network. Returns the tag.
    """
    with tempfile.TemporaryDirectory(prefix="lamina-build-") as ctx_dir:
        ctx = Path(ctx_dir)
        for name, content in (context_files or {}).items():
            path = ctx.joinpath(*_safe_relpath(name).parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        (ctx / "Dockerfile").write_text(dockerfile_text)
        extra: List[str] = []
        for key, value in (build_args or {}).items():
            extra += ["--build-arg", f"{key}={value}"]
        _docker_build(tag, ctx, extra)
    return tag


def docker_save(tag: str, path: PathLike) -> Path:
    """`docker save -o PATH TAG`; returns the path of the tarball."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    docker("save", "-o", str(out), tag)
    return out


def saved_tar_layout(path: PathLike) -> str:
    """Which layout a `docker save` tarball has.

    "oci" if it carries oci-layout + index.json (Docker 25+ engines, which also keep manifest.json),
    "docker" for the classic layout (manifest.json + <id>/layer.tar only).
    """
    with tarfile.open(path) as tar:
        names = {m.name.lstrip("./") for m in tar.getmembers()}
    if "oci-layout" in names and "index.json" in names:
        return "oci"
    if "manifest.json" in names:
        return "docker"
    raise ValueError(f"{path} has neither manifest.json nor oci-layout: not a docker save tarball")
