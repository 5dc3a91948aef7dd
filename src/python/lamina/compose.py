"""compose(base, layers, overrides) -> a new Image, at the manifest/config level: no layer byte is read or changed."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from lamina.errors import PlatformMismatch
from lamina.image import Image, Layer, Taken
from lamina.model import (
    ANN_SELECTOR,
    ANN_SOURCE,
    ANN_SOURCE_DIGEST,
    EPOCH,
    OCI_CONFIG,
    Descriptor,
    Platform,
    canonical_json,
)
from lamina.select import describe


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


def _built_on(taken: Taken, stack: Sequence[str]) -> str:
    """"; built on layers 0-1,3": the positions of `stack` (diff_ids below the added layer in the
    composed image) that were below it in its source image too ("" when that is not known)."""
    if taken.below_diff_ids is None:
        return ""
    known = set(taken.below_diff_ids)
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
    layers: Sequence[Layer],
    overrides: ConfigOverrides = ConfigOverrides(),
    *,
    platform: Optional[Platform] = None,
    allow_platform_mismatch: bool = False,
    tags: Sequence[str] = (),
    name: str = "the composed image",
    created: str = EPOCH,
) -> Image:
    """A new Image: base's layers, then `layers` in order; the config inherited from base.

    A layer of `layers` that another image's `taken_from` marked is appended with annotations
    naming its source and selector and a history entry saying so; an unmarked one (a new layer
    lamina made) is appended with its own descriptor and history. Every layer keeps its opener
    and what is known of it (source, `verified_by`), so writers, push and load read each blob
    only from where it already is. Reads no layer bytes."""
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
        for layer in layers:
            taken = layer.taken
            if taken is not None and taken.platform is not None and not taken.platform.matches(platform):
                asked = f" (asked for by {taken.target})" if taken.target else ""
                raise PlatformMismatch(
                    f"layer {describe(layer)} from {layer.source}{asked} is for {taken.platform}, "
                    f"but the image is for {platform}; pick a layer built for {platform} or allow the mismatch"
                )
    history = [h for h in (config.get("history") or []) if isinstance(h, dict)]
    out = [dataclasses.replace(l, descriptor=_oci(l.descriptor, l.descriptor.annotations)) for l in base_layers]
    if sum(1 for h in history if not h.get("empty_layer")) != len(base_layers):
        history, out = _padded_history(history, out, created)
    diff_ids = [layer.diff_id for layer in base_layers]
    for layer in layers:
        d = layer.descriptor
        diff_ids.append(layer.diff_id)
        taken = layer.taken
        if taken is None:  # a new layer: as it was made
            out.append(layer)
            history.append({"created": created, **dict(layer.history[-1] if layer.history else {})})
            continue
        annotations = {ANN_SOURCE: layer.source, ANN_SOURCE_DIGEST: d.digest, ANN_SELECTOR: taken.selector}
        out.append(dataclasses.replace(layer, descriptor=_oci(d, tuple(sorted(annotations.items())))))
        history.append({
            "created": created,
            "created_by": layer.created_by or f"lamina: layer {d.digest}",
            "comment": f"lamina: layer {d.digest} from {layer.source} ({taken.selector})" + _built_on(taken, diff_ids[:-1]),
        })
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    config["history"] = history
    config["created"] = created
    _apply(config, overrides)
    config_bytes = canonical_json(config)
    return Image(name, config_bytes, Descriptor.of(OCI_CONFIG, config_bytes), tuple(out), tags=tuple(tags))


def _padded_history(history: list[dict], base_layers: list[Layer], created: str) -> tuple[list[dict], list[Layer]]:
    """A base whose history does not have one entry per layer (none at all, or a count that does
    not match) would leave the composed image's history out of step with its layers, and every
    layer's created_by unreadable. The old entries are kept, marked empty (they describe no layer
    one can tell), and each base layer gets an entry of its own."""
    kept = [{**h, "empty_layer": True} for h in history]
    padded = []
    layers = []
    for layer in base_layers:
        entry = {"created": created, "created_by": f"lamina: layer {layer.descriptor.digest} of the base"}
        padded.append(entry)
        layers.append(dataclasses.replace(layer, history=(entry,)))
    return kept + padded, layers


def _oci(d: Descriptor, annotations: tuple[tuple[str, str], ...]) -> Descriptor:
    return d.as_oci_layer(annotations)
