"""Large synthetic images written in chunks (never whole in memory), for tests and benchmarks."""
from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
from typing import Sequence

CHUNK = 1 << 20


def write_random_layer(path: str, size: int, name: str = "data.bin") -> str:
    """An uncompressed layer tar at `path` holding one file of `size` random bytes; returns its digest."""
    h = hashlib.sha256()
    with open(path, "wb") as out:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o644
        header = info.tobuf(format=tarfile.PAX_FORMAT)
        out.write(header)
        h.update(header)
        left = size
        while left:
            data = os.urandom(min(CHUNK, left))
            out.write(data)
            h.update(data)
            left -= len(data)
        pad = b"\0" * ((512 - size % 512) % 512) + b"\0" * 1024
        out.write(pad)
        h.update(pad)
    return "sha256:" + h.hexdigest()


def write_big_docker_archive(path: str, sizes: Sequence[int], tag: str = "big:latest",
                             architecture: str = "amd64") -> list[str]:
    """A classic `docker save` archive with one random layer per size; returns the diff_ids."""
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(path))) as tmp:
        layers = []
        for i, size in enumerate(sizes):
            layer_path = os.path.join(tmp, f"layer{i}.tar")
            layers.append((write_random_layer(layer_path, size, f"layer{i}/data.bin"), layer_path))
        config = json.dumps({
            "architecture": architecture,
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [d for d, _ in layers]},
            "history": [{"created_by": f"random layer {i}"} for i in range(len(layers))],
        }, sort_keys=True).encode()
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        config_path = os.path.join(tmp, config_name)
        with open(config_path, "wb") as f:
            f.write(config)
        manifest = [{"Config": config_name, "RepoTags": [tag],
                     "Layers": [f"{d[7:]}/layer.tar" for d, _ in layers]}]
        manifest_path = os.path.join(tmp, "manifest.json")
        with open(manifest_path, "w") as f:
            json.dump(manifest, f)
        with tarfile.open(path, "w") as tf:
            tf.add(config_path, config_name)
            for digest, layer_path in layers:
                tf.add(layer_path, f"{digest[7:]}/layer.tar")
            tf.add(manifest_path, "manifest.json")
        return [d for d, _ in layers]
