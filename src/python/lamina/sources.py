"""Image source references (skopeo's transport names where they apply) and opening them as Images."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Union

from lamina.errors import InvalidSource, LaminaError
from lamina.formats.docker_archive import read_docker_archive
from lamina.formats.oci_layout import index_platforms, read_oci
from lamina.formats.store import DirSource, TarSource
from lamina.image import Image
from lamina.model import Platform

if TYPE_CHECKING:
    from lamina.registry.client import RegistryClient
    from lamina.registry.transport import RegistryOptions

TRANSPORTS = ("docker-archive", "oci", "oci-archive")


@dataclass(frozen=True)
class SourceRef:
    transport: str  # one of TRANSPORTS, "docker" for a registry, or "path" for a bare path to sniff
    path: str  # for "docker": HOST[:PORT]/REPO[:TAG][@DIGEST]
    ref: Optional[str] = None  # a tag inside the archive or layout

    def __str__(self) -> str:
        if self.transport == "docker":
            return "docker://" + self.path
        base = self.path if self.transport == "path" else f"{self.transport}:{self.path}"
        return f"{base}:{self.ref}" if self.ref else base


def parse_source(text: str) -> SourceRef:
    """`docker-archive:PATH[:TAG]`, `oci:DIR[:REF]`, `oci-archive:PATH[:REF]`, `docker://REF`, or a bare path."""
    if not text:
        raise InvalidSource("empty image source")
    if text.startswith("docker://"):
        return SourceRef("docker", text[len("docker://"):])
    transport, sep, rest = text.partition(":")
    if sep and transport in TRANSPORTS:
        if not rest:
            raise InvalidSource(f"{text!r}: {transport}: needs a path")
        if os.path.exists(rest) or ":" not in rest:
            return SourceRef(transport, rest)
        path, _, ref = rest.partition(":")
        return SourceRef(transport, path, ref or None)
    if sep and transport in ("docker-daemon", "docker"):
        raise InvalidSource(
            f"{text!r}: the {transport}: transport is resolved by the Pants plugin, not by a file reader"
        )
    return SourceRef("path", text)


def sniff(path: str) -> str:
    """The transport a bare path holds: 'oci' for a layout directory, else an archive kind."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "oci-layout")):
            return "oci"
        raise InvalidSource(f"{path}: directory is not an OCI layout (no oci-layout file)")
    if not os.path.exists(path):
        raise InvalidSource(f"{path}: no such file or directory")
    source = TarSource(path)
    if source.has_file("manifest.json"):
        return "docker-archive"
    if source.has_file("oci-layout"):
        return "oci-archive"
    raise InvalidSource(f"{path}: tar archive holds neither manifest.json (docker save) nor oci-layout (OCI)")


def open_image(text: str, name: Optional[str] = None, platform: Optional[Platform] = None,
               registry: Optional["RegistryOptions"] = None, client: Optional["RegistryClient"] = None) -> Image:
    """The image a source reference names. `name` is how it is recorded (defaults to `text`).

    `registry` configures `docker://` sources; without it they use the Docker config the environment names.
    `client`, for a `docker://` source, is the client to read it with (it counts what it receives).
    """
    ref = parse_source(text)
    if ref.transport == "docker":
        from lamina.registry.source import open_registry_image
        from lamina.registry.transport import RegistryOptions

        options = registry or RegistryOptions.from_environ(os.environ)
        return open_registry_image(text, options, name, platform, client)
    transport = sniff(ref.path) if ref.transport == "path" else ref.transport
    label = name or text
    if transport == "oci":
        if not os.path.isdir(ref.path):
            raise InvalidSource(f"{ref.path}: no such OCI layout directory")
        return read_oci(DirSource(ref.path), label, ref.ref, platform)
    if transport == "docker-archive" and os.path.isdir(ref.path):  # unpacked (daemon.export_unpacked)
        unpacked = DirSource(ref.path)
        if not unpacked.has_file("manifest.json"):
            raise InvalidSource(f"{ref.path}: not a docker save archive (no manifest.json)")
        image = read_docker_archive(unpacked, label, ref.ref)
        return _richer_oci_view(unpacked, image, label, ref.ref, platform)
    if not os.path.isfile(ref.path):
        raise InvalidSource(f"{ref.path}: no such file")
    source = TarSource(ref.path)
    if transport == "docker-archive":
        if not source.has_file("manifest.json"):
            raise InvalidSource(f"{ref.path}: not a docker save archive (no manifest.json)")
        image = read_docker_archive(source, label, ref.ref)
        return _richer_oci_view(source, image, label, ref.ref, platform)
    return read_oci(source, label, ref.ref, platform)


def source_platforms(text: str, registry: Optional["RegistryOptions"] = None) -> tuple[Platform, ...]:
    """The platforms of a multi-platform source (an OCI layout or archive holding an index, a
    registry index), in its order; () for a source of one image."""
    ref = parse_source(text)
    if ref.transport == "docker":
        from lamina.registry.client import RegistryClient
        from lamina.registry.reference import parse_reference
        from lamina.registry.source import index_platforms as registry_platforms
        from lamina.registry.transport import RegistryOptions

        options = registry or RegistryOptions.from_environ(os.environ)
        parsed = parse_reference(text)
        return registry_platforms(RegistryClient(parsed.registry, options), parsed)
    transport = sniff(ref.path) if ref.transport == "path" else ref.transport
    if transport == "oci" and os.path.isdir(ref.path):
        return index_platforms(DirSource(ref.path), ref.ref)
    if transport in ("oci-archive", "docker-archive") and os.path.isfile(ref.path):  # Docker 25+ archives hold an OCI index
        try:
            source = TarSource(ref.path)
        except LaminaError:
            return ()  # open_image says what is wrong with it
        return index_platforms(source, ref.ref)
    return ()


def _richer_oci_view(source: Union[TarSource, DirSource], image: Image, label: str, tag: Optional[str],
                     platform: Optional[Platform]) -> Image:
    """The same image read through the archive's OCI index when it has one (Docker 25+ and lamina
    write both): that view keeps exact media types and layer annotations (the audit trail, and the
    source repositories a push can mount from). Used only when it agrees on the config digest."""
    if not (source.has_file("oci-layout") and source.has_file("index.json")):
        return image
    try:
        oci = read_oci(source, label, tag, platform)
    except LaminaError:
        return image
    if oci.config_descriptor.digest != image.config_descriptor.digest or oci.diff_ids != image.diff_ids:
        if platform is not None and platform.matches(oci.platform) and not platform.matches(image.platform):
            # a Docker 25+ archive of a multi-platform image: manifest.json names one platform's
            # image, the OCI index holds the platform asked for
            return dataclasses.replace(oci, tags=image.tags or oci.tags)
        return image
    return dataclasses.replace(oci, tags=image.tags or oci.tags)
