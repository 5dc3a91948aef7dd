"""Large synthetic images written in chunks (never whole in memory), for tests and benchmarks."""
from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
import zlib
from typing import Mapping, Sequence

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


def write_bomb_oci(path: str, files: Mapping[str, bytes], inflated: int) -> str:
    """An OCI layout at `path` whose one gzip layer is a tar of `files`, its end-of-archive blocks,
    then `inflated` zero bytes (a few hundred KB of gzip per 400 MiB), compressed as it is written,
    with a true digest and diff_id; returns the layer's digest."""
    from lamina_testing.images import layer_tar

    blobs = os.path.join(path, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    plain, packed = hashlib.sha256(), hashlib.sha256()
    size = 0
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip stream, mtime 0
    tmp = os.path.join(blobs, "layer.partial")
    with open(tmp, "wb") as out:
        def put(data: bytes) -> None:
            nonlocal size
            plain.update(data)
            piece = gz.compress(data)
            packed.update(piece)
            out.write(piece)
            size += len(piece)

        put(layer_tar(files))
        zeros = bytes(CHUNK)
        left = inflated
        while left:
            put(zeros[: min(CHUNK, left)])
            left -= min(CHUNK, left)
        tail = gz.flush()
        packed.update(tail)
        out.write(tail)
        size += len(tail)
    digest = "sha256:" + packed.hexdigest()
    os.rename(tmp, os.path.join(blobs, digest[7:]))

    def blob(data: bytes) -> dict:
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, d[7:]), "wb") as f:
            f.write(data)
        return {"digest": d, "size": len(data)}

    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + plain.hexdigest()]},
        "history": [{"created_by": "a bomb: zeros after the last tar header"}],
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size}],
    }, sort_keys=True).encode()
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", **blob(manifest)}]}
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    return digest
