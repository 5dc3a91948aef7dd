"""An SBOM of a composed image (`<name>.cdx.json`, CycloneDX 1.5 JSON): every package its dpkg
and apk databases list, with name, version, architecture and purl, and the layer that brought it.

What the image's package manager reports is what the SBOM lists: for each database path (dpkg's
status, apk's installed, and each file of dpkg's status.d/, as distroless images have) the
highest layer's copy (the merge layer's, when the package databases were merged), its installed
packages only (dpkg: not those whose Status says "not-installed" or "config-files", removed with
their configuration files kept; apk lists only installed packages).

Which layer brought a package: the lowest layer of the stack (base first) whose copy of that
database lists the package (name, architecture) at the version the image shows. A layer taken
from an image built on the same base lists the base's packages too, unchanged: they are the
base's. A layer that upgraded a package (a different version than the layers below) brought it.
The databases are what is read, not the package files: a layer whose database lists a package
installed by a layer of its source image that was not taken is still named as the one that
brought it (the package database merge reports such version conflicts).

Each layer is a component too (type "file", named by its digest: source image, selector, its
`docker_layer` target, index), the image's files layer and the merge layer included; the image
depends on its layers, each layer on the packages it brought. The document is deterministic:
its serial number is derived from the image's manifest digest and its timestamp is the image's
`created`. purls are `pkg:deb/<distro>/<name>@<version>?arch=<arch>&distro=<id>-<version_id>`
and `pkg:apk/...`, the distro from the image's `os-release` (Debian and Alpine when it names
no distro of that family)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from lamina.errors import InvalidSource
from lamina.pkgdb import APK_INSTALLED, DPKG_STATUS, OS_RELEASE, PARSERS, Stanza, is_status_d_stanzas

if TYPE_CHECKING:
    from lamina.image import Image
    from lamina.pkgdb import LayerDatabases, MergePlan

INVENTORY_FORMAT = "lamina.packages/1"
INVENTORY_FILE = "packages.json"
SERIAL_NAMESPACE = uuid.UUID("6f1b3c0e-5a53-4a5e-9f0e-6c616d696e61")  # lamina's, for uuid5 serial numbers
PURL_TYPES = {"dpkg": ("deb", "debian"), "apk": ("apk", "alpine")}  # tool: (purl type, default namespace)


@dataclass(frozen=True)
class Package:
    tool: str  # "dpkg" or "apk"
    name: str
    architecture: str
    version: str
    status: str = ""  # dpkg's Status ("" for apk)

    @property
    def installed(self) -> bool:
        """Whether its files are in the image: for dpkg, its Status is not "not-installed" or
        "config-files" (removed, its configuration files kept); apk lists installed packages only."""
        return self.tool != "dpkg" or self.status.split()[-1:] not in (["not-installed"], ["config-files"])

    @property
    def key(self) -> tuple[str, str, str]:
        return self.name, self.architecture, self.version

    def to_json(self) -> list:
        return [self.name, self.architecture, self.version, self.status]


def _apk_arch(stanza: Stanza) -> str:
    for line in stanza.text.split(b"\n"):
        if line[:2] == b"A:":
            return line[2:].decode("utf-8", "replace").strip()
    return ""


# The databases that list installed packages (MERGEABLE also holds apk's world, the packages asked
# for, which the SBOM does not list).
INSTALLED_DATABASES = {DPKG_STATUS: "dpkg", APK_INSTALLED: "apk"}


def tool_of(path: str) -> Optional[str]:
    """The package manager whose database `path` is (None: not one the SBOM reads)."""
    return INSTALLED_DATABASES.get(path) or ("dpkg" if is_status_d_stanzas(path) else None)


def packages_of(tool: str, content: bytes, what: str) -> tuple[Package, ...]:
    """The packages a copy of `tool`'s database lists (installed or not), as the merge parses it."""
    out = []
    for s in PARSERS[tool](content, what):
        arch = _apk_arch(s) if tool == "apk" else s.architecture
        out.append(Package(tool, s.name, arch, s.version, s.status))
    return tuple(out)


@dataclass(frozen=True)
class LayerInventory:
    """What one layer's databases list: (database path, its packages) for each copy it writes,
    and (path, content) of the os-release files it writes."""

    digest: str
    databases: tuple[tuple[str, tuple[Package, ...]], ...] = ()
    os_release: tuple[tuple[str, str], ...] = ()

    def database(self, path: str) -> Optional[tuple[Package, ...]]:
        return dict(self.databases).get(path)


def layer_inventory(digest: str, databases: "LayerDatabases", what: str = "") -> LayerInventory:
    dbs = tuple((path, packages_of(tool_of(path) or "", content, what or digest))
                for path, content in (*databases.copies, *databases.status_d_copies) if tool_of(path))
    return LayerInventory(digest, dbs, tuple((p, c.decode("utf-8", "replace")) for p, c in databases.os_release))


def merge_inventory(found: "MergePlan", digest: str) -> LayerInventory:
    """The inventory of the merge layer of `found` (its digest `digest`)."""
    return LayerInventory(digest, tuple((m.path, packages_of(m.tool, m.content, "the merge layer"))
                                        for m in found.merged if tool_of(m.path)))


@dataclass
class Inventory:
    """The inventories of a stack's layers, by digest (a layer without one holds no database), and
    the digests of the layers that were not read (their bytes were not there)."""

    layers: dict[str, LayerInventory] = field(default_factory=dict)
    unread: list[str] = field(default_factory=list)

    def add_stack(self, found: "MergePlan") -> None:
        """The layers the merge planning read (MergePlan.stack)."""
        for sl in found.stack:
            if sl.databases.copies or sl.databases.os_release or sl.databases.status_d_copies:
                self.layers[sl.digest] = layer_inventory(sl.digest, sl.databases, sl.name)
        self.unread += [sl.digest for sl in found.stack if sl.name in found.unread]

    def renamed(self, digests: Mapping[str, str]) -> "Inventory":
        """The same inventory under other layer digests (`digests`: old to new), for the image as
        pushed, whose layers may be the compressed forms of the composed image's (same diff_ids)."""
        return Inventory({digests.get(d, d): replace(l, digest=digests.get(d, d)) for d, l in self.layers.items()},
                         [digests.get(d, d) for d in self.unread])

    def to_json(self) -> dict:
        """`packages.json`: what compose writes the SBOM from."""
        return {"format": INVENTORY_FORMAT, "unread": sorted(set(self.unread)), "layers": [
            {"digest": l.digest, "databases": {path: [p.to_json() for p in pkgs] for path, pkgs in l.databases},
             "os_release": dict(l.os_release)} for _, l in sorted(self.layers.items())]}


def read_inventory(data: object, what: str) -> Inventory:
    """The Inventory in a `packages.json` document (Inventory.to_json)."""
    bad = InvalidSource(f"{what}: not a {INVENTORY_FORMAT} document")
    if not isinstance(data, dict) or data.get("format") != INVENTORY_FORMAT or not isinstance(data.get("layers"), list):
        raise bad
    out = []
    try:
        for l in data["layers"]:
            if any(tool_of(path) is None for path in l["databases"]):
                raise bad
            dbs = tuple((path, tuple(Package(tool_of(path) or "", *(str(v) for v in p)) for p in pkgs))
                        for path, pkgs in sorted(l["databases"].items()))
            out.append(LayerInventory(str(l["digest"]), dbs,
                                      tuple(sorted((str(k), str(v)) for k, v in l.get("os_release", {}).items()))))
        unread = [str(d) for d in data.get("unread", [])]
    except (KeyError, TypeError, AttributeError, ValueError):
        raise bad from None
    return Inventory({l.digest: l for l in out}, unread)


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines of an os-release file (values unquoted)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            out[key] = value
    return out


def _os_release(stack: Sequence[Optional[LayerInventory]]) -> dict[str, str]:
    """The image's os-release: the highest layer's /etc/os-release, else its /usr/lib/os-release
    (Debian's /etc/os-release is a symlink to it)."""
    for path in OS_RELEASE:
        for inv in reversed(stack):
            if inv is not None and path in dict(inv.os_release):
                return parse_os_release(dict(inv.os_release)[path])
    return {}


def purl_of(p: Package, os_release: Mapping[str, str]) -> str:
    from packageurl import PackageURL

    kind, namespace = PURL_TYPES[p.tool]
    distro_id = os_release.get("ID", "").lower()
    qualifiers = {"arch": p.architecture} if p.architecture else {}
    if distro_id and (distro_id == namespace or namespace in os_release.get("ID_LIKE", "").lower().split()):
        namespace = distro_id
        version_id = os_release.get("VERSION_ID", "")
        qualifiers["distro"] = f"{distro_id}-{version_id}" if version_id else distro_id
    return PackageURL(kind, namespace, p.name, p.version, qualifiers).to_string()


@dataclass(frozen=True)
class Attributed:
    package: Package
    layer: int  # the index, in the composed image, of the layer that brought it
    path: str  # the database that lists it


def attribute(stack: Sequence[Optional[LayerInventory]]) -> list[Attributed]:
    """Every installed package the image's databases list, with the layer that brought it (see the
    module's description); `stack` is the image's layers' inventories, base first (None: not read
    or no database)."""
    out = []
    seen: set = set()
    paths = {path for inv in stack if inv is not None for path, _ in inv.databases}
    for path in sorted(paths):  # dpkg's status, apk's installed, and each of dpkg's status.d/ files
        copies = [(i, inv.database(path)) for i, inv in enumerate(stack) if inv is not None]
        copies = [(i, pkgs) for i, pkgs in copies if pkgs is not None]
        if not copies:
            continue
        shown = [p for p in copies[-1][1] if p.installed]
        listed = [(i, {p.key for p in pkgs if p.installed}) for i, pkgs in copies]
        for p in sorted(shown, key=lambda p: p.key):
            if (p.tool, p.key) in seen:
                continue  # listed by two databases (status and status.d/): once
            seen.add((p.tool, p.key))
            layer = next(i for i, keys in listed if p.key in keys)  # the top copy lists it, at least
            out.append(Attributed(p, layer, path))
    return out


def _timestamp(image: "Image") -> datetime:
    created = str(image.config.get("created") or "")
    try:
        return datetime.fromisoformat(created.replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        return datetime(1970, 1, 1, tzinfo=timezone.utc)


def sbom_document(image: "Image", trail: Mapping, inventory: Inventory) -> str:
    """The CycloneDX 1.5 JSON of `image`, whose audit trail is `trail` (build.audit_trail) and whose
    layers' packages are in `inventory`, checked against the CycloneDX schema."""
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot5
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    from packageurl import PackageURL
    import jsonschema  # the validator imports it lazily; named here so Pants infers the dependency
    del jsonschema

    rows = trail["layers"]
    manifest = str(trail["manifest"])
    name = image.tags[0] if image.tags else image.source
    root = Component(type=ComponentType.CONTAINER, name=name or "image", version=manifest, bom_ref="image",
                     hashes=[HashType(alg=HashAlgorithm.SHA_256, content=manifest.split(":", 1)[-1])],
                     properties=[Property(name="lamina:config", value=str(trail["config"])),
                                 *(Property(name="lamina:tag", value=t) for t in image.tags)])
    bom = Bom(serial_number=uuid.uuid5(SERIAL_NAMESPACE, f"{INVENTORY_FORMAT} {manifest}"),
              metadata=BomMetaData(component=root, timestamp=_timestamp(image)))
    stack = [inventory.layers.get(str(r["digest"])) for r in rows]
    unread = set(inventory.unread)
    layers = []
    for r in rows:
        digest = str(r["digest"])
        props = {"lamina:layer:index": str(r["index"]), "lamina:layer:source": str(r["source"]),
                 "lamina:layer:selector": str(r["selector"]), "lamina:layer:target": str(r.get("target") or ""),
                 "lamina:layer:diff_id": str(r["diff_id"])}
        if r.get("source_index") is not None:
            props["lamina:layer:source_index"] = str(r["source_index"])
        if digest in unread:
            props["lamina:packages"] = "not read: the layer's bytes were not there to read"
        layer = Component(type=ComponentType.FILE, name=digest, bom_ref=f"layer:{r['index']}:{digest}",
                          description=str(r.get("created_by") or "") or None,
                          hashes=[HashType(alg=HashAlgorithm.SHA_256, content=digest.split(":", 1)[-1])],
                          properties=[Property(name=k, value=v) for k, v in props.items() if v])
        layers.append(layer)
        bom.components.add(layer)
    bom.register_dependency(root, layers)
    os_release = _os_release(stack)
    brought: dict[int, list[Component]] = {}
    for a in attribute(stack):
        p, r = a.package, rows[a.layer]
        purl = purl_of(p, os_release)
        props = {"lamina:package:manager": p.tool, "lamina:package:database": "/" + a.path,
                 "lamina:package:architecture": p.architecture, "lamina:layer:digest": str(r["digest"]),
                 "lamina:layer:index": str(r["index"]), "lamina:layer:source": str(r["source"]),
                 "lamina:layer:target": str(r.get("target") or "")}
        c = Component(type=ComponentType.LIBRARY, name=p.name, version=p.version or None, bom_ref=purl,
                      purl=PackageURL.from_string(purl),
                      properties=[Property(name=k, value=v) for k, v in props.items() if v])
        bom.components.add(c)
        brought.setdefault(a.layer, []).append(c)
    for i, cs in sorted(brought.items()):
        bom.register_dependency(layers[i], cs)
    text = JsonV1Dot5(bom).output_as_string(indent=2)
    error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text)
    if error is not None:
        raise AssertionError(f"lamina wrote an SBOM the CycloneDX 1.5 schema rejects: {error}")
    return text + "\n"

