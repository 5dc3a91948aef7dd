"""Synthetic images for tests: layers from a dict of files, written as docker-save (both kinds) or OCI."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence, Union

FileValue = Union[bytes, str, None]  # bytes: file; None: directory; str starting '->': symlink; '=>': hard link


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: Mapping[str, FileValue]) -> bytes:
    """An uncompressed tar: bytes values are files, None directories, '->x' symlinks, '=>x' hard links."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        _add_entries(tf, [(name, files[name]) for name in sorted(files)])
    return buf.getvalue()


def write_tar(path: str, entries: Sequence[tuple[str, FileValue]]) -> None:
    """A tar holding `entries` as given: in this order, names unchecked (for hostile archives)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        _add_entries(tf, entries)


def _add_entries(tf: tarfile.TarFile, entries: Sequence[tuple[str, FileValue]]) -> None:
    for name, value in entries:
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
    variant: str = ""
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
        if self.variant:
            config["variant"] = self.variant
        config.update(self.config_extra)
        return config

    def config_bytes(self) -> bytes:
        return json.dumps(self.config(), sort_keys=True).encode()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tf.addfile(info, io.BytesIO(data))


def write_docker_classic(images: Mapping[str, FakeImage], path: str, manifest_first: bool = False) -> None:
    """A classic `docker save` archive: <id>/layer.tar, <hex>.json, manifest.json (tag -> image).

    manifest_first=True puts manifest.json at the start, so truncating the file cuts a layer, not it.
    """
    members: list[tuple[str, FileValue]] = []
    manifest = []
    written = set()
    for tag, image in images.items():
        config = image.config_bytes()
        config_name = sha(config)[7:] + ".json"
        if config_name not in written:
            members.append((config_name, config))
            written.add(config_name)
        layer_names = []
        for layer in image.layers:
            layer_id = hashlib.sha256(layer.blob).hexdigest()
            name = f"{layer_id}/layer.tar"
            if name not in written:
                members.append((name, layer.blob))
                written.add(name)
            layer_names.append(name)
        manifest.append({"Config": config_name, "RepoTags": [tag], "Layers": layer_names})
    entry = ("manifest.json", json.dumps(manifest).encode())
    write_tar(path, [entry] + members if manifest_first else members + [entry])


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ANN_REF_NAME = "org.opencontainers.image.ref.name"


def _image_blobs(image: FakeImage, files: dict[str, bytes]) -> dict:
    """Adds the image's config, layers and manifest to `files`; returns the manifest's descriptor."""
    config = image.config_bytes()
    files["blobs/sha256/" + sha(config)[7:]] = config
    layer_descs = []
    for layer in image.layers:
        blob = layer.blob
        files["blobs/sha256/" + sha(blob)[7:]] = blob
        layer_descs.append({"mediaType": MEDIA[layer.compression], "digest": sha(blob), "size": len(blob)})
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
        "layers": layer_descs,
    }).encode()
    files["blobs/sha256/" + sha(manifest)[7:]] = manifest
    return {"mediaType": OCI_MANIFEST, "digest": sha(manifest), "size": len(manifest)}


def _oci_files(image: FakeImage, tag: Optional[str]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    entry = _image_blobs(image, files)
    if tag:
        entry["annotations"] = {ANN_REF_NAME: tag}
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode()
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    return files


def _write_dir(files: Mapping[str, bytes], path: str) -> None:
    for name, data in files.items():
        full = os.path.join(path, name)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)


def write_oci_multi(path: str, images: Sequence[tuple[FakeImage, Optional[str]]], nested: bool = False,
                    archive: bool = False) -> None:
    """One OCI layout holding several (image, tag) pairs, each index entry with its platform.

    nested=True puts the entries behind an image index blob, as a multi-platform image has them.
    """
    files: dict[str, bytes] = {}
    entries = []
    for image, tag in images:
        entry = _image_blobs(image, files)
        entry["platform"] = {"os": image.os, "architecture": image.architecture}
        if image.variant:
            entry["platform"]["variant"] = image.variant
        if tag:
            entry["annotations"] = {ANN_REF_NAME: tag}
        entries.append(entry)
    if nested:
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
        files["blobs/sha256/" + sha(index)[7:]] = index
        entries = [{"mediaType": OCI_INDEX, "digest": sha(index), "size": len(index)}]
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": entries}).encode()
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    if archive:
        write_tar(path, sorted(files.items()))
    else:
        _write_dir(files, path)


def blob_file(layout: str, digest: str) -> str:
    """Where an OCI layout directory keeps the blob `digest`."""
    return os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1])


def _read_json(path: str) -> dict:
    with open(path, "rb") as f:
        return json.loads(f.read())


def _put_blob(layout: str, data: bytes) -> dict:
    with open(blob_file(layout, sha(data)), "wb") as f:
        f.write(data)
    return {"digest": sha(data), "size": len(data)}


def oci_manifest(layout: str) -> dict:
    """The manifest the first index.json entry of an OCI layout directory names."""
    entry = _read_json(os.path.join(layout, "index.json"))["manifests"][0]
    return _read_json(blob_file(layout, entry["digest"]))


def rewrite_oci(layout: str, manifest: Optional[Callable[[dict], None]] = None,
                config: Optional[Callable[[dict], Union[dict, bytes, None]]] = None) -> None:
    """Edit the (first) image of an OCI layout directory in place, keeping its digests consistent.

    `config` edits the parsed config (or returns raw bytes to store instead); `manifest` edits the
    parsed manifest. New blobs are written and the manifest and index.json entries updated, so the
    result is a layout whose only flaw is the one the callbacks put in.
    """
    index_path = os.path.join(layout, "index.json")
    index = _read_json(index_path)
    m = _read_json(blob_file(layout, index["manifests"][0]["digest"]))
    if config is not None:
        c = _read_json(blob_file(layout, m["config"]["digest"]))
        result = config(c)
        data = result if isinstance(result, bytes) else json.dumps(result if result is not None else c).encode()
        m["config"].update(_put_blob(layout, data))
    if manifest is not None:
        manifest(m)
    index["manifests"][0].update(_put_blob(layout, json.dumps(m).encode()))
    with open(index_path, "w") as f:
        json.dump(index, f)


def replace_oci_layer(layout: str, i: int, blob: bytes) -> None:
    """Store `blob` as layer `i` of an OCI layout directory, its descriptor updated to match (diff_id not)."""
    def edit(m: dict) -> None:
        m["layers"][i].update(_put_blob(layout, blob))

    rewrite_oci(layout, manifest=edit)


def flip_byte(path: str, offset: int) -> None:
    """XOR one byte of a file (a negative offset counts from the end)."""
    with open(path, "r+b") as f:
        f.seek(offset, os.SEEK_END if offset < 0 else os.SEEK_SET)
        pos = f.tell()
        byte = f.read(1)
        f.seek(pos)
        f.write(bytes([byte[0] ^ 0x01]))


def leftovers(directory: str) -> list[str]:
    """Names lamina's atomic writers use for temporaries (.lamina-tmp-*, .lamina-files-*) left in `directory`."""
    return sorted(n for n in os.listdir(directory) if n.startswith(".lamina-"))


def tree(root: str) -> dict[str, bytes]:
    """Every file under `root` by relative path, with its bytes."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, root)] = f.read()
    return out


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
    _write_dir(_oci_files(image, tag), path)


def write_oci_archive(image: FakeImage, path: str, tag: Optional[str] = None) -> None:
    write_tar(path, sorted(_oci_files(image, tag).items()))
