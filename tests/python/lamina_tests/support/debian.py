"""Owns the real Debian base image tests build: a `debootstrap --variant=minbase` rootfs, cached per machine."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional, Tuple

from lamina_tests.support.images import image_exists
from lamina_tests.support.services import docker

__all__ = ["DEBIAN_SUITE", "debian_debs", "debian_image", "debian_mirror", "debian_rootfs_tar"]

DEBIAN_SUITE = "bookworm"  # Debian 12: usr-merged (/bin -> usr/bin, /lib -> usr/lib)
CACHE_DIR = Path(os.path.expanduser("~/.cache/lamina/debian"))
SOURCES = ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_TIMEOUT_S = 1200


def debian_mirror() -> str:
    """The Debian mirror apt on this machine is configured with (debootstrap downloads from it)."""
    for path in SOURCES:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] and len(words) > 1 and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"] and len(words) > 2 and "security" not in words[-3:][0]:
                return next(w for w in words[1:] if "://" in w)
    return DEFAULT_MIRROR


def _flavour(suite: str, include: Tuple[str, ...]) -> str:
    return f"{suite}-minbase" + "".join(f"-{p}" for p in include)


def debian_rootfs_tar(suite: str = DEBIAN_SUITE, include: Tuple[str, ...] = ()) -> Path:
    """A tar of a `debootstrap --variant=minbase [--include=PKG,...] SUITE` rootfs, built once per
    machine under ~/.cache/lamina/debian/ (keyed by suite and packages). Raises RuntimeError when
    debootstrap is missing or cannot reach the mirror."""
    out = CACHE_DIR / f"{_flavour(suite, include)}.tar"
    if out.is_file():
        return out
    debootstrap = shutil.which("debootstrap") or next(
        (p for p in ("/usr/sbin/debootstrap", "/sbin/debootstrap") if os.path.isfile(p)), None)
    if debootstrap is None:
        raise RuntimeError("no debootstrap on this machine (apt-get install debootstrap)")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f"{suite}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.is_file():
            return out
        with tempfile.TemporaryDirectory(prefix=f"lamina-{suite}-", dir=CACHE_DIR) as tmp:
            root = Path(tmp) / "rootfs"
            done = subprocess.run(
                [debootstrap, "--variant=minbase", *([f"--include={','.join(include)}"] if include else []),
                 suite, str(root), debian_mirror()],
                capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT_S, stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                raise RuntimeError(f"debootstrap {suite} failed ({done.returncode}): {done.stderr[-2000:] or done.stdout[-2000:]}")
            # What `docker import` needs: the tree as is (owners, modes, symlinks), no apt caches.
            for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (root / sub).glob("*.deb" if sub.endswith("archives") else "*_*"):
                    entry.unlink()
            partial = Path(tmp) / "rootfs.tar"
            subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial), "."],
                           check=True, timeout=600)
            os.replace(partial, out)
    return out


def debian_image(tag: Optional[str] = None, suite: str = DEBIAN_SUITE, include: Tuple[str, ...] = ()) -> str:
    """The engine image `docker import`ed from debian_rootfs_tar(suite, include) (reused when present)."""
    tag = tag or f"lamina-test/debian:{_flavour(suite, include)}"
    if image_exists(tag):
        return tag
    tar = debian_rootfs_tar(suite, include)
    docker("import", "--change", 'CMD ["/bin/sh"]', str(tar), tag)
    return tag


def debian_debs(packages: Tuple[str, ...], suite: str = DEBIAN_SUITE) -> Path:
    """A directory of the .deb files of `packages` and of every dependency the minbase rootfs of
    `suite` lacks (no recommends), fetched once per machine with `apt-get download` into
    ~/.cache/lamina/debian/debs-<suite>-<packages>/. What to fetch is what `apt-get install -s`
    with the rootfs's dpkg status as the installed set says: the host's apt (its lists) must be
    of `suite`. Raises RuntimeError when apt cannot resolve or download them."""
    out = CACHE_DIR / f"debs-{suite}-{'-'.join(packages)}"
    if (out / "done").is_file():
        return out
    rootfs = debian_rootfs_tar(suite)
    with open(CACHE_DIR / f"{suite}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / "done").is_file():
            return out
        with tempfile.TemporaryDirectory(prefix="lamina-debs-", dir=CACHE_DIR) as tmp:
            subprocess.run(["tar", "-C", tmp, "-xf", str(rootfs), "./var/lib/dpkg/status"], check=True, timeout=120)
            simulated = subprocess.run(
                ["apt-get", "-s", "-o", f"Dir::State::status={tmp}/var/lib/dpkg/status", "-o", "Debug::NoLocking=1",
                 "install", "--no-install-recommends", *packages],
                capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
            wanted = [line.split()[1] for line in simulated.stdout.splitlines() if line.startswith("Inst ")]
            if simulated.returncode != 0 or not wanted:
                raise RuntimeError(f"apt-get cannot resolve {packages} for {suite}: {simulated.stderr[-2000:]}")
            versions = [line.split()[2].strip("(") for line in simulated.stdout.splitlines() if line.startswith("Inst ")]
            debs = Path(tmp) / "debs"
            debs.mkdir()
            got = subprocess.run(["apt-get", "download", *(f"{n}={v}" for n, v in zip(wanted, versions))],
                                 cwd=debs, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
            if got.returncode != 0 or len(list(debs.glob("*.deb"))) != len(wanted):
                raise RuntimeError(f"apt-get download {wanted} failed: {got.stderr[-2000:]}")
            (debs / "done").write_text("\n".join(wanted) + "\n")
            shutil.rmtree(out, ignore_errors=True)
            os.replace(debs, out)
    return out


if __name__ == "__main__":  # build the cache ahead of a test run: python -m lamina_tests.support.debian
    print(debian_rootfs_tar())
