"""Owns the multi-platform source images tests compose: busybox images for linux/amd64 and
linux/arm64 built from files (no engine), each arch's binary being Debian's real busybox-static."""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple, Union

from lamina_testing.images import FakeImage, FakeLayer, sha, write_docker_oci, write_oci_multi

__all__ = ["ARCHES", "MACHINES", "PlatformSources", "busybox_static", "elf_machine", "platform_image",
           "write_platform_sources"]

ARCHES = ("amd64", "arm64")
MACHINES = {"amd64": "x86-64", "arm64": "aarch64"}  # Debian arch -> what elf_machine() says
CACHE_DIR = Path(os.path.expanduser("~/.cache/lamina/multiarch"))
APT_TIMEOUT_S = 600
CMD = ["/bin/sh", "-c", "cat /opt/tool/arch.txt"]


def elf_machine(path: Union[str, "os.PathLike[str]"]) -> str:
    """The ELF file's e_machine: "x86-64" (62), "aarch64" (183) or "other:<n>". Raises ValueError
    when the file is no ELF file."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise ValueError(f"{path}: not an ELF file")
    (machine,) = struct.unpack(("<" if head[5] == 1 else ">") + "H", head[18:20])
    return {62: "x86-64", 183: "aarch64"}.get(machine, f"other:{machine}")


def _run(*argv: str, cwd: Optional[str] = None) -> "subprocess.CompletedProcess[str]":
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=APT_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"{' '.join(argv)}: no answer in {APT_TIMEOUT_S}s") from e


def _installed(arch: str) -> Optional[Path]:
    """The busybox of the installed busybox-static package, when it is `arch`'s."""
    listed = _run("dpkg", "-L", "busybox-static") if shutil.which("dpkg") else None
    if listed is None or listed.returncode != 0:
        return None
    for line in listed.stdout.splitlines():
        path = Path(line.strip())
        if path.parts[-2:] == ("bin", "busybox") and path.is_file() and elf_machine(path) == MACHINES[arch]:
            return path
    return None


@functools.lru_cache(maxsize=None)
def busybox_static(arch: str) -> Path:
    """The statically linked busybox of Debian's busybox-static package for `arch` ("amd64" or
    "arm64"): the installed one when it is that arch's, else `apt-get download busybox-static:ARCH`
    extracted once per machine to ~/.cache/lamina/multiarch/busybox-ARCH (adding the dpkg
    architecture, and running apt-get update only when apt does not know the package). Safe for
    concurrent callers (a lock, temp dir + rename); remembered per process. Raises RuntimeError
    when it cannot be had."""
    if arch not in MACHINES:
        raise ValueError(f"arch must be one of {ARCHES}, not {arch!r}")
    out = CACHE_DIR / f"busybox-{arch}"
    if out.is_file():
        return out
    installed = _installed(arch)
    if installed is not None:
        return installed
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        raise RuntimeError(f"no busybox-static for {arch}: this machine has no apt-get / dpkg-deb")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / "busybox.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.is_file():
            return out
        native = _run("dpkg", "--print-architecture").stdout.strip()
        if arch != native and arch not in _run("dpkg", "--print-foreign-architectures").stdout.split():
            added = _run("dpkg", "--add-architecture", arch)
            if added.returncode != 0:
                raise RuntimeError(f"dpkg --add-architecture {arch} failed: {added.stderr.strip()}")
        package = f"busybox-static:{arch}"
        if _run("apt-cache", "show", package).returncode != 0:
            updated = _run("apt-get", "update")
            if updated.returncode != 0:
                raise RuntimeError(f"apt-get update failed ({updated.returncode}): {updated.stderr[-2000:]}")
        with tempfile.TemporaryDirectory(prefix=f"busybox-{arch}-", dir=CACHE_DIR) as tmp:
            got = _run("apt-get", "download", package, cwd=tmp)
            debs = list(Path(tmp).glob("busybox-static_*.deb"))
            if got.returncode != 0 or len(debs) != 1:
                raise RuntimeError(f"apt-get download {package} failed ({got.returncode}): {got.stderr[-2000:]}")
            root = Path(tmp) / "root"
            extracted = _run("dpkg-deb", "-x", str(debs[0]), str(root))
            binary = next((p for p in (root / "bin/busybox", root / "usr/bin/busybox") if p.is_file()), None)
            if extracted.returncode != 0 or binary is None:
                raise RuntimeError(f"{debs[0].name} holds no bin/busybox: {extracted.stderr.strip()}")
            if elf_machine(binary) != MACHINES[arch]:
                raise RuntimeError(f"{debs[0].name}: busybox is {elf_machine(binary)}, not {MACHINES[arch]}")
            os.chmod(binary, 0o755)
            os.replace(binary, out)
    return out


@dataclass(frozen=True)
class PlatformSources:
    """What write_platform_sources() wrote. `archives[arch]` is a single-platform `docker save`
    archive (Docker 25+ layout: manifest.json plus an OCI layout, as write_docker_oci writes it),
    read as `docker-archive:PATH`; `index` an OCI layout whose index.json names one image index
    (tag `tag`) of both platforms. `diff_ids[arch]` / `digests[arch]` are that arch's two layers
    (busybox rootfs, tool), base first; the layers are gzip, so digests differ from diff_ids."""

    archives: Mapping[str, Path]
    index: Path
    tag: str
    diff_ids: Mapping[str, Tuple[str, ...]]
    digests: Mapping[str, Tuple[str, ...]]
    images: Mapping[str, FakeImage]

    @property
    def index_ref(self) -> str:
        """The multi-platform source: `oci:DIR:TAG`."""
        return f"oci:{self.index}:{self.tag}"

    def archive_ref(self, arch: str) -> str:
        """The single-platform source of `arch`: `docker-archive:PATH`."""
        return f"docker-archive:{self.archives[arch]}"

    @staticmethod
    def archive_tag(arch: str) -> str:
        """The tag `arch`'s archive carries (what `docker load` of it creates)."""
        return f"lamina-test/multiarch:{arch}"

    @staticmethod
    def platform(arch: str) -> str:
        """The platform `arch`'s image is for, as Platform.parse reads it: "linux/ARCH"."""
        return f"linux/{arch}"


def platform_image(arch: str) -> FakeImage:
    """`arch`'s two-layer image: a busybox rootfs (bin/busybox 0755, bin/sh and bin/cat symlinks to
    it), then opt/tool/arch.txt holding the arch name; config linux/ARCH, Cmd printing that file.
    (FakeLayer gives every file mode 0755 and mtime 0.)"""
    rootfs = FakeLayer({"bin": None, "bin/busybox": busybox_static(arch).read_bytes(),
                        "bin/sh": "->busybox", "bin/cat": "->busybox", "tmp": None},
                       created_by="COPY rootfs/ /", compression="gzip")
    tool = FakeLayer({"opt": None, "opt/tool": None, "opt/tool/arch.txt": f"{arch}\n".encode()},
                     created_by="RUN install tool", compression="gzip")
    return FakeImage([rootfs, tool], architecture=arch, os="linux",
                     config_extra={"config": {"Env": ["PATH=/bin"], "Cmd": list(CMD)}})


def write_platform_sources(out_dir: Path, tag: str = "1") -> PlatformSources:
    """Write under `out_dir` (created if needed) `<arch>.tar` per arch (docker-archive, tagged
    lamina-test/multiarch:ARCH) and `index/` (OCI layout, both platforms behind one index, `tag`).
    Deterministic: the same busybox binaries give the same digests. Raises RuntimeError as
    busybox_static() does."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = {arch: platform_image(arch) for arch in ARCHES}
    archives: Dict[str, Path] = {}
    for arch, image in images.items():
        archives[arch] = out_dir / f"{arch}.tar"
        write_docker_oci(image, PlatformSources.archive_tag(arch), str(archives[arch]))
    index = out_dir / "index"
    write_oci_multi(str(index), [(images[arch], None) for arch in ARCHES], nested=True)
    _tag_index(index, tag)
    return PlatformSources(
        archives=archives, index=index, tag=tag, images=images,
        diff_ids={a: tuple(sha(l.tar) for l in i.layers) for a, i in images.items()},
        digests={a: tuple(sha(l.blob) for l in i.layers) for a, i in images.items()},
    )


def _tag_index(layout: Path, tag: str) -> None:
    """Name index.json's one entry (the image index) `tag`: write_oci_multi tags only the images."""
    path = layout / "index.json"
    top = json.loads(path.read_bytes())
    top["manifests"][0]["annotations"] = {"org.opencontainers.image.ref.name": tag}
    path.write_text(json.dumps(top))
