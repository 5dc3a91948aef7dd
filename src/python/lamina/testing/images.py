"""Synthetic images for tests: layers from a dict of files, written as docker-save (both kinds) or OCI."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Union

FileValue = Union[bytes, str, None]  # bytes: file; None: directory; str starting '->': symlink; '=>': hard link


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: Mapping[str, FileValue]) -> bytes:
    """An uncompressed tar: bytes values are files, None directories, '->x' symlinks, '=>x' hard links."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in sorted(files):
            value = files[name]
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if value is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
            elif isinstance(value, str) and value.startswith("->"):
                info.type = tarfile.SYMTYPE
                info.linkname = value[2:]
                tf.addfile(info)
            elif isinstance(value, str) and value.startswith("=>"):
                info.type = tarfile.LNKTYPE
                info.linkname = value[2:]
                tf.addfile(info)
            else:
                data = value if isinstance(value, bytes) else value.encode()
                info.size = len(data)
                info.mode = 0o755
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return data


MEDIA = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}


@dataclass
class FakeLayer:
    files: Mapping[str, FileValue]
    created_by: str = ""
    compression: str = "none"

    @property
    def tar(self) -> bytes:
        return layer_tar(self.files)

    @property
    def blob(self) -> bytes:
        return compress(self.tar, self.compression)


@dataclass
class FakeImage:
    layers: Sequence[FakeLayer]
    architecture: str = "amd64"
    os: str = "linux"
    empty_history: Sequence[tuple[int, str]] = ()  # (position before layer i, created_by) of empty entries
    config_extra: Mapping = field(default_factory=dict)

    def config(self) -> dict:
        history = []
        empties = sorted(self.empty_history)
        for i, layer in enumerate(self.layers):
            history += [{"created_by": text, "empty_layer": True} for pos, text in empties if pos == i]
            history.append({"created_by": layer.created_by or f"layer {i}"})
        history += [{"created_by": text, "empty_layer": True} for pos, text in empties if pos >= len(self.layers)]
        config = {
            "architecture": self.architecture,
            "os": self.os,
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha(l.tar) for l in self.layers]},
            "history": history,
        }
        config.update(self.config_extra)
        return config

    def config_bytes(self) -> bytes:
        return json.dumps(self.config(), sort_keys=True).encode()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tf.addfile(info, io.BytesIO(data))


def write_docker_classic(images: Mapping[str, FakeImage], path: str) -> None:
    """A classic `docker save` archive: <id>/layer.tar, <hex>.json, manifest.json (tag -> image)."""
    with tarfile.open(path, "w") as tf:
        manifest = []
        written = set()
        for tag, image in images.items():
            config = image.config_bytes()
            config_name = sha(config)[7:] + ".json"
            if config_name not in written:
                _add(tf, config_name, config)
                written.add(config_name)
            layer_names = []
            for layer in image.layers:
                layer_id = hashlib.sha256(layer.blob).hexdigest()
                name = f"{layer_id}/layer.tar"
                if name not in written:
                    _add(tf, name, layer.blob)
                    written.add(name)
                layer_names.append(name)
            manifest.append({"Config": config_name, "RepoTags": [tag], "Layers": layer_names})
        _add(tf, "manifest.json", json.dumps(manifest).encode())


def _oci_files(image: FakeImage, tag: Optional[str]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    config = image.config_bytes()
    files["blobs/sha256/" + sha(config)[7:]] = config
    layer_descs = []
    for layer in image.layers:
        blob = layer.blob
        files["blobs/sha256/" + sha(blob)[7:]] = blob
        layer_descs.append({"mediaType": MEDIA[layer.compression], "digest": sha(blob), "size": len(blob)})
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
        "layers": layer_descs,
    }).encode()
    files["blobs/sha256/" + sha(manifest)[7:]] = manifest
    entry: dict = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest), "size": len(manifest)}
    if tag:
        entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode()
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    return files


def write_docker_oci(image: FakeImage, tag: str, path: str) -> None:
    """A Docker 25+ `docker save` archive: an OCI layout plus manifest.json naming blobs/sha256/..."""
    files = _oci_files(image, tag)
    config = image.config_bytes()
    manifest = [{
        "Config": "blobs/sha256/" + sha(config)[7:],
        "RepoTags": [tag],
        "Layers": ["blobs/sha256/" + sha(l.blob)[7:] for l in image.layers],
    }]
    files["manifest.json"] = json.dumps(manifest).encode()
    with tarfile.open(path, "w") as tf:
        for name in sorted(files):
            _add(tf, name, files[name])


def write_oci_dir(image: FakeImage, path: str, tag: Optional[str] = None) -> None:
    for name, data in _oci_files(image, tag).items():
        full = os.path.join(path, name)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)


def write_oci_archive(image: FakeImage, path: str, tag: Optional[str] = None) -> None:
    files = _oci_files(image, tag)
    with tarfile.open(path, "w") as tf:
        for name in sorted(files):
            _add(tf, name, files[name])
