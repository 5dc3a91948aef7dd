"""compose(base, layers, overrides) -> a new image, at the manifest/config level: layer bytes never change."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from lamina.errors import PlatformMismatch
from lamina.image import Image, Layer
from lamina.model import (
    ANN_SELECTOR,
    ANN_SOURCE,
    ANN_SOURCE_DIGEST,
    EPOCH,
    OCI_CONFIG,
    OCI_MANIFEST,
    Descriptor,
    Platform,
    canonical_json,
    oci_layer_media_type,
)
from lamina.select import describe


@dataclass(frozen=True)
class AddedLayer:
    """A layer taken from a source image, with where it came from (for the audit trail)."""

    layer: Layer
    source: str
    selector: str
    platform: Platform
    trusted: bool = False  # True when its blob was already verified (a lamina bundle)
    target: str = ""  # the build target that asked for it, if any (named in errors)
    # diff_ids of the layers below it in its source image (None: not known). The composed image
    # records which of its own layers below this one are among them, so that a check of the
    # composed image alone (`lamina layers --conflicts`) knows what the layer was built on.
    below_diff_ids: Optional[tuple[str, ...]] = None


@dataclass(frozen=True)
class ConfigOverrides:
    env: tuple[tuple[str, str], ...] = ()
    entrypoint: Optional[tuple[str, ...]] = None
    cmd: Optional[tuple[str, ...]] = None
    workdir: Optional[str] = None
    user: Optional[str] = None
    labels: tuple[tuple[str, str], ...] = ()
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    stop_signal: Optional[str] = None


@dataclass(frozen=True)
class ComposedImage:
    config_bytes: bytes
    manifest_bytes: bytes
    layers: tuple[Layer, ...]
    trusted: tuple[bool, ...]
    tags: tuple[str, ...] = field(default=())
    sources: tuple[str, ...] = field(default=())  # per layer: the image it came from, for error messages

    @property
    def config_descriptor(self) -> Descriptor:
        return _descriptor(OCI_CONFIG, self.config_bytes)

    @property
    def manifest_descriptor(self) -> Descriptor:
        return _descriptor(OCI_MANIFEST, self.manifest_bytes)


def _descriptor(media_type: str, data: bytes) -> Descriptor:
    import hashlib

    return Descriptor(media_type, "sha256:" + hashlib.sha256(data).hexdigest(), len(data))


def scratch_config(platform: Platform) -> dict:
    config: dict[str, Any] = {
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    }
    if platform.variant:
        config["variant"] = platform.variant
    return config


def _dict(value: Any) -> dict:
    return dict(value) if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return list(value) if isinstance(value, list) else []


def _apply(config: dict, o: ConfigOverrides) -> None:
    c = config.get("config")
    if not isinstance(c, dict):  # absent, or null / not an object in a hostile config
        c = config["config"] = {}
    if o.env:
        env = [e for e in _list(c.get("Env")) if isinstance(e, str)]
        names = [e.split("=", 1)[0] for e in env]
        for key, value in o.env:
            item = f"{key}={value}"
            if key in names:
                env[names.index(key)] = item
            else:
                env.append(item)
                names.append(key)
        c["Env"] = env
    if o.entrypoint is not None:
        c["Entrypoint"] = list(o.entrypoint)
        if o.cmd is None:
            c.pop("Cmd", None)  # as in a Dockerfile: a new ENTRYPOINT resets the inherited CMD
    if o.cmd is not None:
        c["Cmd"] = list(o.cmd)
    if o.workdir is not None:
        c["WorkingDir"] = o.workdir
    if o.user is not None:
        c["User"] = o.user
    if o.labels:
        labels = _dict(c.get("Labels"))
        labels.update(dict(o.labels))
        c["Labels"] = labels
    if o.exposed_ports:
        ports = _dict(c.get("ExposedPorts"))
        for p in o.exposed_ports:
            ports[p if "/" in p else p + "/tcp"] = {}
        c["ExposedPorts"] = ports
    if o.volumes:
        volumes = _dict(c.get("Volumes"))
        for v in o.volumes:
            volumes[v] = {}
        c["Volumes"] = volumes
    if o.stop_signal is not None:
        c["StopSignal"] = o.stop_signal


def _built_on(added: AddedLayer, stack: Sequence[str]) -> str:
    """"; built on layers 0-1,3": the positions of `stack` (diff_ids below the added layer in the
    composed image) that were below it in its source image too ("" when that is not known)."""
    if added.below_diff_ids is None:
        return ""
    known = set(added.below_diff_ids)
    positions = [i for i, d in enumerate(stack) if d in known]
    if not positions:
        return "; built on no layer here"
    runs: list[list[int]] = []
    for p in positions:
        if runs and runs[-1][1] == p - 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return "; built on layers " + ",".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


def compose(
    base: Optional[Image],
    added: Sequence[AddedLayer],
    new_layers: Sequence[Layer] = (),
    overrides: ConfigOverrides = ConfigOverrides(),
    platform: Optional[Platform] = None,
    allow_platform_mismatch: bool = False,
    tags: Sequence[str] = (),
    base_trusted: bool = False,
    created: str = EPOCH,
    new_layers_trusted: bool = True,
    new_layers_source: str = "the new files layer",
) -> ComposedImage:
    """A new image: base's layers, then `added` in order, then `new_layers`; the config inherited from base.
    `new_layers` were made in this process (trusted) unless `new_layers_trusted` is False, e.g. a
    files layer read from disk: then their digest and diff_id are checked as they are written."""
    if base is None:
        if platform is None:
            raise PlatformMismatch("a scratch base needs an explicit platform, e.g. linux/amd64")
        config = scratch_config(platform)
        base_layers: tuple[Layer, ...] = ()
    else:
        config = copy.deepcopy(base.config)
        base_layers = base.layers
        if platform is not None and not allow_platform_mismatch and not platform.matches(base.platform):
            raise PlatformMismatch(
                f"base {base.source} is {base.platform}, but the image is for {platform}; "
                "use a base built for that platform, or allow the mismatch"
            )
        platform = base.platform
    if not allow_platform_mismatch:
        for a in added:
            if not a.platform.matches(platform):
                asked = f" (asked for by {a.target})" if a.target else ""
                raise PlatformMismatch(
                    f"layer {describe(a.layer)} from {a.source}{asked} is for {a.platform}, "
                    f"but the image is for {platform}; pick a layer built for {platform} or allow the mismatch"
                )
    history = [h for h in (config.get("history") or []) if isinstance(h, dict)]
    diff_ids = [layer.diff_id for layer in base_layers]
    descriptors = [
        Descriptor(oci_layer_media_type(l.descriptor.media_type), l.descriptor.digest, l.descriptor.size,
                   l.descriptor.annotations)
        for l in base_layers
    ]
    for a in added:
        d = a.layer.descriptor
        descriptors.append(
            Descriptor(oci_layer_media_type(d.media_type), d.digest, d.size).with_annotations(
                {ANN_SOURCE: a.source, ANN_SOURCE_DIGEST: d.digest, ANN_SELECTOR: a.selector}
            )
        )
        diff_ids.append(a.layer.diff_id)
        entry: dict[str, Any] = {
            "created": created,
            "created_by": a.layer.created_by or f"lamina: layer {d.digest}",
            "comment": f"lamina: layer {d.digest} from {a.source} ({a.selector})" + _built_on(a, diff_ids[:-1]),
        }
        history.append(entry)
    for layer in new_layers:
        descriptors.append(layer.descriptor)
        diff_ids.append(layer.diff_id)
        history.append({"created": created, **dict(layer.history[-1] if layer.history else {})})
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    config["history"] = history
    config["created"] = created
    _apply(config, overrides)
    config_bytes = canonical_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _descriptor(OCI_CONFIG, config_bytes).to_json(),
        "layers": [d.to_json() for d in descriptors],
    }
    layers = tuple(base_layers) + tuple(a.layer for a in added) + tuple(new_layers)
    trusted = (base_trusted,) * len(base_layers) + tuple(a.trusted for a in added) + (new_layers_trusted,) * len(new_layers)
    sources = (
        (base.source if base else "",) * len(base_layers)
        + tuple(a.source for a in added)
        + (new_layers_source,) * len(new_layers)
    )
    return ComposedImage(config_bytes, canonical_json(manifest), layers, trusted, tuple(tags), sources)
