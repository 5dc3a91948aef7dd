"""Package databases of a composed stack, merged: one small deterministic layer on top whose dpkg
`status` and apk `installed` list every package as the layer that installed it left it.

Every apt or dpkg run rewrites `var/lib/dpkg/status` whole (apk its `lib/apk/db/installed`), so
when layers of different images are stacked the top layer's copy hides what the others
installed. A copy is *superseded* by another when its layer was below the other's in that
other's source image (the other was built on it and knew its packages): only the copies no other
supersedes are merged. The merge is the union of their stanzas by package (and architecture):

- a stanza every copy that has the package agrees on is taken as it is;
- a package a copy removed (a copy it superseded has it, it does not) counts as "removed";
- copies that disagree on the version, the dpkg Status or whether the package is installed at
  all are a conflict, reported by name and versions; the stanza of the copy highest in the
  stack is taken (its layer's files of the package are the ones the image shows);
- copies that agree on version and Status but differ in another field (rare: a changed
  description) take the highest copy's stanza, and are listed as such, not as a conflict.

Stanzas are written sorted by name then architecture, as dpkg writes its status; each stanza is
byte for byte as the layer left it. `var/lib/dpkg/status.d/` (distroless: one file per package)
and dpkg's `info/*.list` / `*.md5sums` are per package and need no merge; dpkg's `available` is
left as the top layer has it (apt does not read it; dpkg's own commands that do are not used in
images). rpm's database (a binary database) is detected and reported as not mergeable.

The merge layer is added only when it is needed: when two or more copies of a database are not
superseded and their merge differs from the copy the stack already shows."""
from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import IO, Optional, Sequence

from lamina.errors import InvalidSource, SpecError
from lamina.image import Layer

DPKG_STATUS = "var/lib/dpkg/status"
APK_INSTALLED = "lib/apk/db/installed"
MERGEABLE = {DPKG_STATUS: "dpkg", APK_INSTALLED: "apk"}
RPM_GLOBS = ("var/lib/rpm/*", "usr/lib/sysimage/rpm/*")
STATUS_D = "var/lib/dpkg/status.d/"
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")  # read beside the databases, for the SBOM's purls
MAX_OS_RELEASE = 64 << 10
MAX_DATABASE = 64 << 20  # bytes of one database copy held in memory; a larger one is an error
MERGE_CREATED_BY = "lamina: merged package databases"
MERGE_SOURCE = "package databases"
LAYER_BLOB = "package-db-layer.tar.gz"
LAYER_META = "package-db-layer.json"
REPORT_FORMAT = "lamina.package-db-merge/1"


# --- reading the databases -------------------------------------------------------------------


@dataclass(frozen=True)
class Stanza:
    """One package's paragraph of a database, as its layer wrote it."""

    name: str
    architecture: str
    version: str
    status: str  # dpkg's Status field ("" for apk: what it lists is installed)
    text: bytes  # the paragraph's lines, without the blank line that ends it

    @property
    def key(self) -> tuple[str, str]:
        return self.name, self.architecture

    def describe(self) -> str:
        arch = f":{self.architecture}" if self.architecture else ""
        return f"{self.name}{arch}"


def _paragraphs(data: bytes) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    current: list[bytes] = []
    for line in data.split(b"\n"):
        if line.strip():
            current.append(line)
        elif current:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def parse_dpkg(data: bytes, what: str) -> list[Stanza]:
    """The stanzas of a dpkg `status` file (RFC 822-style paragraphs; field names case-insensitive)."""
    out = []
    for lines in _paragraphs(data):
        fields: dict[str, str] = {}
        for line in lines:
            if line[:1] in (b" ", b"\t"):
                continue  # a continuation of the field before it
            name, sep, value = line.partition(b":")
            if sep:
                fields.setdefault(name.strip().decode("utf-8", "replace").lower(),
                                  value.strip().decode("utf-8", "replace"))
        if not fields.get("package"):
            raise InvalidSource(f"{what}: {DPKG_STATUS} has a paragraph without a Package field "
                                f"({lines[0][:60].decode('utf-8', 'replace')!r}): not a dpkg status file")
        out.append(Stanza(fields["package"], fields.get("architecture", ""), fields.get("version", ""),
                          fields.get("status", ""), b"\n".join(lines)))
    return out


def parse_apk(data: bytes, what: str) -> list[Stanza]:
    """The stanzas of apk's `installed` database (one `X:value` line per field, P: the name)."""
    out = []
    for lines in _paragraphs(data):
        fields: dict[str, str] = {}
        for line in lines:
            if line[1:2] == b":":
                fields.setdefault(line[:1].decode("latin-1"), line[2:].decode("utf-8", "replace"))
        if not fields.get("P"):
            raise InvalidSource(f"{what}: {APK_INSTALLED} has a paragraph without a P: (name) line: not an "
                                "apk installed database")
        # apk installs one package of a name: its name is the key, its arch only described
        out.append(Stanza(fields["P"], "", fields.get("V", ""), "", b"\n".join(lines)))
    return out


PARSERS = {"dpkg": parse_dpkg, "apk": parse_apk}


def serialize(stanzas: Sequence[Stanza]) -> bytes:
    """A database of `stanzas`, sorted by name then architecture, each ended by a blank line."""
    return b"".join(s.text + b"\n\n" for s in sorted(stanzas, key=lambda s: s.key))


def _read_capped(content: IO[bytes], path: str, what: str) -> bytes:
    data = content.read(MAX_DATABASE + 1)
    if len(data) > MAX_DATABASE:
        raise InvalidSource(f"{what}: /{path} is larger than {MAX_DATABASE >> 20} MiB, more than a package "
                            "database should be; set merge_package_databases=False to compose without merging")
    return data


def is_status_d_stanzas(path: str) -> bool:
    """Whether `path` is one of dpkg's status.d/ files of a package's stanza (distroless; not its
    `.md5sums` beside it)."""
    return path.startswith(STATUS_D) and "/" not in path[len(STATUS_D):] and len(path) > len(STATUS_D) \
        and not path.endswith(".md5sums")


def is_rpm_database(path: str) -> bool:
    return any(fnmatch.fnmatchcase(path, g) for g in RPM_GLOBS)


@dataclass(frozen=True)
class LayerDatabases:
    """What one layer holds of the package databases (its last entry of each path wins)."""

    copies: tuple[tuple[str, bytes], ...] = ()  # (mergeable path, content)
    rpm: bool = False  # it writes rpm's database
    status_d: bool = False  # it writes dpkg's per-package status.d/
    os_release: tuple[tuple[str, bytes], ...] = ()  # (path, content) of the os-release files it writes
    status_d_copies: tuple[tuple[str, bytes], ...] = ()  # (path, content) of its status.d/ stanza files


def read_layer(layer: Layer, what: str = "") -> tuple[LayerDatabases, list]:
    """The package databases in `layer`, and its header entries (IndexEntry, for the filesystem the
    merge layer is laid on), in one walk of the layer. Only database files are read into memory."""
    from lamina.analyze.index import IndexEntry
    from lamina.layertar import walk

    what = what or layer.what
    copies: dict[str, bytes] = {}
    os_release: dict[str, bytes] = {}
    status_d_copies: dict[str, bytes] = {}
    rpm = status_d = False
    headers = []

    def read(entry, content):  # type: ignore[no-untyped-def]
        if entry.path in MERGEABLE or is_status_d_stanzas(entry.path):
            return _read_capped(content, entry.path, what)
        if entry.path in OS_RELEASE:
            return content.read(MAX_OS_RELEASE)
        return None

    for e, content in walk(layer, what, read):
        if not e.path:
            continue
        headers.append(IndexEntry(e.path, e.kind, e.mode & 0o7777, e.uid, e.gid, e.size if e.kind == "file" else 0,
                                  e.linkname))
        for is_one, found in ((MERGEABLE.__contains__, copies), (OS_RELEASE.__contains__, os_release),
                              (is_status_d_stanzas, status_d_copies)):
            if is_one(e.path):
                if content is not None:
                    found[e.path] = content
                else:
                    found.pop(e.path, None)  # no longer a file there (a later entry replaced it)
        rpm = rpm or is_rpm_database(e.path)
        status_d = status_d or e.path.startswith(STATUS_D)
    return LayerDatabases(tuple(sorted(copies.items())), rpm, status_d, tuple(sorted(os_release.items())),
                          tuple(sorted(status_d_copies.items()))), headers


# --- planning the merge ----------------------------------------------------------------------


@dataclass(frozen=True)
class StackLayer:
    """A layer of the stack, as the merge sees it."""

    position: int
    source: str  # its source image, as named
    name: str  # how reports name it
    digest: str
    diff_id: str
    below: Optional[frozenset[str]]  # diff_ids below it in its source image; None: not known
    databases: LayerDatabases
    target: str = ""

    def supersedes(self, other: "StackLayer") -> bool:
        """Whether this layer was built on `other` (so its databases know `other`'s packages)."""
        if self.below is not None:
            return other.diff_id in self.below
        return other.source == self.source and other.position < self.position  # same image, lower

    def copy(self, path: str) -> Optional[bytes]:
        return dict(self.databases.copies).get(path)


@dataclass(frozen=True)
class Conflict:
    tool: str
    path: str
    package: str  # name[:arch]
    choices: tuple[tuple[str, str], ...]  # (version, or "removed" / "version V, Status S", layer name), base first
    taken: str  # the layer whose stanza (or removal) is in the merge

    @property
    def message(self) -> str:
        listed = "; ".join(f"{v} in {layer}" for v, layer in self.choices)
        return (f"package {self.package} ({self.tool}, /{self.path}) differs between the layers' databases: "
                f"{listed}; the merged database takes {self.taken}'s, the highest. Take the package's layers "
                "from one image, or rebuild them on a common base with the same version")

    def to_json(self) -> dict:
        return {"tool": self.tool, "path": self.path, "package": self.package, "message": self.message,
                "choices": [{"version": v, "layer": l} for v, l in self.choices], "taken": self.taken}


@dataclass(frozen=True)
class Merged:
    tool: str
    path: str
    content: bytes
    packages: int
    sources: tuple[StackLayer, ...]  # the copies merged, base first


@dataclass(frozen=True)
class MergePlan:
    merged: tuple[Merged, ...] = ()  # the databases the merge layer writes (empty: no layer needed)
    conflicts: tuple[Conflict, ...] = ()
    differing: tuple[str, ...] = ()  # packages of one version whose stanzas differ in other fields
    notes: tuple[str, ...] = ()  # rpm databases, status.d/
    read: int = 0  # layers read
    unread: tuple[str, ...] = ()  # layers whose bytes were not here to read
    stack: tuple[StackLayer, ...] = field(default=(), compare=False)  # the layers as read (for the SBOM)

    def report(self) -> dict:
        return {
            "format": REPORT_FORMAT,
            "merged": [{"tool": m.tool, "path": m.path, "packages": m.packages,
                        "from": [{"source": s.source, "name": s.name, "digest": s.digest, "target": s.target}
                                 for s in m.sources]} for m in self.merged],
            "conflicts": [c.to_json() for c in self.conflicts],
            "differing": list(self.differing),
            "notes": list(self.notes),
            "unread": list(self.unread),
        }


def _vote(stanza: Optional[Stanza], with_status: bool = True) -> str:
    """What a copy says of a package: "removed", or its version (and dpkg Status)."""
    if stanza is None:
        return "removed"
    return f"version {stanza.version}" + (f", Status {stanza.status}" if stanza.status and with_status else "")


def _merge_one(tool: str, path: str, copies: Sequence[tuple[StackLayer, list[Stanza]]]
               ) -> tuple[list[Stanza], list[Conflict], list[str]]:
    """The merged stanzas of one database path; `copies` are every layer's copy, base first."""
    effective = [(l, s) for l, s in copies if not any(o.supersedes(l) for o, _ in copies if o is not l)]
    by_key = [{s.key: s for s in stanzas} for _, stanzas in copies]
    keys = sorted({k for d in by_key for k in d})
    out, conflicts, differing = [], [], []
    eff_keys = [(l, {s.key: s for s in stanzas}) for l, stanzas in effective]
    for key in keys:
        votes: list[tuple[StackLayer, Optional[Stanza]]] = []
        for layer, have in eff_keys:
            if key in have:
                votes.append((layer, have[key]))
            elif any(layer.supersedes(l) and key in d for (l, _), d in zip(copies, by_key)):
                votes.append((layer, None))  # it had the package below it and removed it
        if not any(s is not None for _, s in votes):
            continue
        top_layer, top = votes[-1]  # the highest copy's say: its layer's files are the ones the image shows
        if all(s is not None and top is not None and s.text == top.text for _, s in votes):
            out.append(top)  # one stanza, however many copies have it
            continue
        if len({_vote(s) for _, s in votes}) > 1:
            name = next(s for _, s in votes if s is not None).describe()
            statuses = len({s.status for _, s in votes if s is not None}) > 1  # named only where they differ
            conflicts.append(Conflict(tool, path, name, tuple((_vote(s, statuses), l.name) for l, s in votes),
                                      top_layer.name))
        elif top is not None:
            differing.append(top.describe())
        if top is not None:
            out.append(top)
    return out, conflicts, differing


def plan(stack: Sequence[StackLayer]) -> MergePlan:
    """What the merge layer of `stack` (base first) must hold: a database for each mergeable path
    that two or more unsuperseded copies write, when their merge is not what the stack shows."""
    merged, conflicts, differing, notes = [], [], [], []
    for path, tool in sorted(MERGEABLE.items()):
        copies = [(l, PARSERS[tool](c, f"{l.name}"))
                  for l in stack for c in (l.copy(path),) if c is not None]
        if len(copies) < 2:
            continue
        effective = [l for l, _ in copies if not any(o.supersedes(l) for o, _ in copies if o is not l)]
        if len(effective) < 2:
            continue
        stanzas, found, diff = _merge_one(tool, path, copies)
        content = serialize(stanzas)
        conflicts += found
        differing += diff
        if content != copies[-1][0].copy(path):
            merged.append(Merged(tool, path, content, len(stanzas), tuple(effective)))
    rpm = [l for l in stack if l.databases.rpm]
    if len(rpm) > 1 and any(not a.supersedes(b) for a in rpm for b in rpm if a.position > b.position):
        names = ", ".join(l.name for l in rpm)
        notes.append(f"rpm's database is written by {names}: it is a binary database lamina cannot merge, so "
                     "the highest layer's copy hides the packages the others installed; take the rpm layers "
                     "from one image")
    if any(l.databases.status_d for l in stack):
        notes.append(f"/{STATUS_D} (one file per package) needs no merge")
    return MergePlan(tuple(merged), tuple(conflicts), tuple(differing), tuple(notes))


def stack_layer(position: int, layer: Layer, databases: LayerDatabases) -> StackLayer:
    """A composed stack's layer as the merge sees it. A base layer (no `taken`) was built on the
    base layers below it (its index in the base image)."""
    taken = layer.taken
    below: Optional[frozenset[str]] = None
    if taken is not None and taken.below_diff_ids is not None:
        below = frozenset(taken.below_diff_ids)
    return StackLayer(position, layer.source, layer.what, layer.descriptor.digest, layer.diff_id, below, databases,
                      taken.target if taken is not None else "")


def plan_for_layers(layers: Sequence[Layer], wanted: Optional[Sequence[bool]] = None) -> tuple[MergePlan, object]:
    """The merge plan of a composed stack (base first), and the filesystem (stackfs.FileSystem) of
    its layers' headers (None when `wanted` says which layers to read: the caller has it).

    Each layer is read once, to its end; only database files are held in memory. `wanted`, when
    given (from the layers' indexes), says which layers hold a database; the others are not read.
    Base layers are known to be built on the base layers below them."""
    from lamina.analyze.index import LayerIndex
    from lamina.analyze.stackfs import apply

    stack, headers, unread = [], [], []
    base_below: list[str] = []
    read = 0
    for i, layer in enumerate(layers):
        dbs = LayerDatabases()
        entries: list = []
        if (wanted is None or wanted[i]) and layer.has_bytes:
            dbs, entries = read_layer(layer)
            read += 1
        elif wanted is None or wanted[i]:
            unread.append(layer.what)
        sl = stack_layer(i, layer, dbs)
        if layer.taken is None:
            sl = StackLayer(sl.position, sl.source, sl.name, sl.digest, sl.diff_id, frozenset(base_below), dbs)
            base_below.append(layer.diff_id)
        stack.append(sl)
        d = layer.descriptor
        headers.append(LayerIndex(layer.source, layer.index, d.digest, layer.diff_id, d.media_type, d.size,
                                  layer.created_by, "", (), (), tuple(entries)))
    found = plan(stack)
    found = MergePlan(found.merged, found.conflicts, found.differing, found.notes, read, tuple(unread), tuple(stack))
    return found, (apply(headers).fs if wanted is None else None)


# --- the merge layer -------------------------------------------------------------------------


def build_merge_layer(found: MergePlan, out_path: str, below: Optional[object]) -> Optional[Layer]:
    """The deterministic layer of `found`'s merged databases at `out_path` (None when nothing is
    merged), laid on `below` as the files layer is (parent directories as they are there)."""
    import dataclasses

    from lamina.newlayer import build_files_layer

    if not found.merged:
        return None
    tmp = tempfile.mkdtemp(prefix=".lamina-pkgdb-", dir=os.path.dirname(os.path.abspath(out_path)))
    try:
        files = []
        for i, m in enumerate(found.merged):
            local = os.path.join(tmp, str(i))
            with open(local, "wb") as f:
                f.write(m.content)
            os.chmod(local, 0o644)
            files.append(("/" + m.path, local))
        layer = build_files_layer(files, out_path, below)  # type: ignore[arg-type]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    comment = "; ".join(f"{m.tool} /{m.path}: {m.packages} packages from " +
                        ", ".join(s.digest for s in m.sources) for m in found.merged)
    return dataclasses.replace(layer, history=({"created_by": MERGE_CREATED_BY, "comment": comment},),
                               source=MERGE_SOURCE)


def is_merge_layer(layer: Layer) -> bool:
    return layer.taken is None and layer.index < 0 and layer.created_by == MERGE_CREATED_BY


def write_merge_dir(found: MergePlan, out_dir: str, below: Optional[object], name: str) -> Optional[Layer]:
    """The merge layer (when one is needed) into `out_dir`, beside its description and the merge
    report (`package-db-layer.json`) and its index (`index.json`, for `lamina check`). The
    description is written last: a directory without it is not a merge layer directory."""
    from lamina.analyze.index import write_index
    from lamina.analyze.scan import scan_files_layer
    from lamina.sbom import INVENTORY_FILE, Inventory, merge_inventory

    os.makedirs(out_dir, exist_ok=True)
    meta_path = os.path.join(out_dir, LAYER_META)
    if os.path.lexists(meta_path):
        os.unlink(meta_path)
    blob = os.path.join(out_dir, LAYER_BLOB)
    tmp_blob = blob + ".tmp"
    layer = None
    try:
        layer = build_merge_layer(found, tmp_blob, below)
        if layer is not None:
            os.replace(tmp_blob, blob)
    finally:
        if os.path.lexists(tmp_blob):
            os.unlink(tmp_blob)
    meta = {"report": found.report(), "layer": None}
    inventory = Inventory()
    inventory.add_stack(found)
    if layer is not None:
        import dataclasses

        layer = dataclasses.replace(layer, opener=lambda: open(blob, "rb"), path=blob)
        d = layer.descriptor
        meta["layer"] = {"mediaType": d.media_type, "digest": d.digest, "size": d.size, "diff_id": layer.diff_id,
                         "history": [dict(h) for h in layer.history]}
        write_index([scan_files_layer(layer, name)], os.path.join(out_dir, "index.json"))
        inventory.layers[d.digest] = merge_inventory(found, d.digest)
    with open(os.path.join(out_dir, INVENTORY_FILE), "w") as f:  # the packages each layer lists, for the SBOM
        json.dump(inventory.to_json(), f, indent=1, sort_keys=True)
        f.write("\n")
    tmp = meta_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, meta_path)
    return layer


@dataclass(frozen=True)
class MergeDir:
    layer: Optional[Layer]
    report: dict = field(default_factory=dict)
    path: str = ""

    def inventory(self):  # type: ignore[no-untyped-def]
        """The packages each layer of the stack lists (sbom.Inventory), None when the directory has
        no packages.json (written by an older lamina)."""
        from lamina.sbom import INVENTORY_FILE, read_inventory

        where = os.path.join(self.path, INVENTORY_FILE)
        try:
            with open(where, "rb") as f:
                data = json.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as e:
            raise SpecError(f"package_db_layer {self.path!r}: cannot read {INVENTORY_FILE}: {e}") from None
        return read_inventory(data, where)


def read_merge_dir(path: str) -> MergeDir:
    """What `write_merge_dir` wrote in `path`: the layer (None: no merge was needed) and the report.
    The layer's bytes are checked against the recorded digest and size when they are read."""
    from lamina.model import OCI_LAYER_GZIP, Descriptor, check_digest

    meta_path = os.path.join(path, LAYER_META)
    try:
        with open(meta_path, "rb") as f:
            meta = json.loads(f.read())
    except FileNotFoundError:
        raise SpecError(f"package_db_layer {path!r} has no {LAYER_META}: make it with `lamina package-db-layer`") from None
    except (OSError, ValueError, RecursionError) as e:
        raise SpecError(f"package_db_layer {path!r}: cannot read {LAYER_META}: {e}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("report"), dict):
        raise SpecError(f"package_db_layer {path!r}: {LAYER_META} is not what `lamina package-db-layer` writes")
    d = meta.get("layer")
    if d is None:
        return MergeDir(None, meta["report"], path)
    ok = (isinstance(d, dict) and d.get("mediaType") == OCI_LAYER_GZIP and isinstance(d.get("size"), int)
          and not isinstance(d.get("size"), bool) and d["size"] >= 0
          and isinstance(d.get("history"), list) and all(isinstance(h, dict) for h in d["history"]))
    if not ok:
        raise SpecError(f"package_db_layer {path!r}: {LAYER_META} is not what `lamina package-db-layer` writes")
    for key in ("digest", "diff_id"):
        check_digest(d.get(key), f"package_db_layer {path!r}: {LAYER_META} layer.{key}")
    blob = os.path.join(path, LAYER_BLOB)
    if not os.path.isfile(blob):
        raise SpecError(f"package_db_layer {path!r} has no {LAYER_BLOB}")
    layer = Layer(Descriptor(OCI_LAYER_GZIP, d["digest"], d["size"]), d["diff_id"], -1, tuple(d["history"]),
                  opener=lambda: open(blob, "rb"), path=blob, source=MERGE_SOURCE)
    return MergeDir(layer, meta["report"], path)


def databases_in_index(paths: Sequence[str]) -> bool:
    """Whether a layer whose index lists `paths` writes a database the merge reads or notes."""
    return any(p in MERGEABLE or is_rpm_database(p) or p.startswith(STATUS_D) for p in paths)


def report_lines(report: dict) -> list[str]:
    """The merge report for people: what was merged from where, then the conflicts and notes."""
    lines = []
    for m in report.get("merged", []):
        names = ", ".join(str(s.get("name", "")) for s in m.get("from", []))
        lines.append(f"merged /{m.get('path')} ({m.get('tool')}, {m.get('packages')} packages) of {names}")
    lines += [f"conflict: {c.get('message')}" for c in report.get("conflicts", [])]
    lines += [f"note: {n}" for n in report.get("notes", [])]
    if report.get("differing"):
        lines.append("note: same version, other fields differ (the highest layer's stanza taken): "
                     + ", ".join(report["differing"]))
    if report.get("unread"):
        lines.append(f"note: not read (their bytes are not here): {', '.join(report['unread'])}")
    return lines
