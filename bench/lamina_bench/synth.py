"""Synthetic `docker save` archives of any size, written streaming (no Docker, nothing big in memory)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

CHUNK = 1 << 20


class RandomReader(io.RawIOBase):
    """A file object that reads `size` bytes of os.urandom."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        self.left -= n
        return os.urandom(n)


def _file(tar: tarfile.TarFile, name: str, size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 946684800
    tar.addfile(info, RandomReader(size))


def _dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 946684800
    tar.addfile(info)


def write_layer(path: Path, top: str, size: int, small_files: int = 0, small_size: int = 4096) -> None:
    """A layer tar: `top`/data.bin (random) plus `small_files` small random files, `size` bytes in all."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        _dir(tar, top)
        for i in range(small_files):
            if i % 1000 == 0:
                _dir(tar, f"{top}/d{i // 1000:03d}")
            _file(tar, f"{top}/d{i // 1000:03d}/f{i:05d}.bin", small_size)
        _file(tar, f"{top}/data.bin", max(0, size - small_files * small_size))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class Synthetic:
    archive: Path
    layers: List[Path]  # the layer tars, base first
    diff_ids: List[str]


def write_archive(path: Path, layers: Sequence[Path], tag: str) -> Synthetic:
    """A classic `docker save` archive (manifest.json, config, <id>/layer.tar) of these layer tars."""
    diff_ids = [sha256_file(p) for p in layers]
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"synthetic layer {i}"} for i in range(len(layers))],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag],
                            "Layers": [f"{d[7:]}/layer.tar" for d in diff_ids]}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in ((config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for d, layer in zip(diff_ids, layers):
            tar.add(str(layer), arcname=f"{d[7:]}/layer.tar")
    return Synthetic(path, list(layers), diff_ids)
