"""Package databases of a composed stack, merged: one small deterministic layer on top whose dpkg
`status` and apk `installed` list every package as the layer that installed it left it.

Every apt or dpkg run rewrites `var/lib/dpkg/status` whole (apk its `lib/apk/db/installed`), so
when layers of different images are stacked the top layer's copy hides what the others
installed. A copy is *superseded* by another when its layer was below the other's in that
other's source image (the other was built on it and knew its packages): only the copies no other
supersedes are merged, three ways, package by package:

- a package is its name; only a dpkg `Multi-Arch: same` package is its name and architecture
  (dpkg installs those once per architecture). Two architectures of one package that are not
  both `Multi-Arch: same` cannot both be in a database (dpkg would refuse it: "multiple
  non-coinstallable package instances"): a conflict, the highest copy's taken;
- each copy is compared with the copy it superseded (its *parent*: the highest copy below it in
  its own image, e.g. the base's when both images are built on the stack's base). A copy whose
  stanza of a package is byte for byte its parent's did not change the package and does not
  vote; a copy that lacks a package its parent has removed it (a vote to remove). A change is
  overridden by a copy built on it that changed the package again; otherwise it votes, even
  from a copy that is itself superseded (an image's lower layer that upgraded a package its
  higher layer, also in the stack, left alone);
- a copy with no parent in the stack (its base is not here) changed the dpkg packages whose
  file list (`var/lib/dpkg/info/NAME.list` or `NAME:ARCH.list`) its layer writes: it installed
  them; its other stanzas are taken as inherited and do not vote. apk has no such per-package
  file, so an apk copy without a parent never votes by this rule;
- the copies that changed a package all agree: their stanza (or the removal) is taken. They
  disagree on the version, the dpkg Status, the Architecture or whether it is installed: a
  conflict, reported by name and each changing copy's version and layer; the stanza (or
  removal) of the highest of them is taken (its layer's files of the package are the ones the
  image shows). They agree on all that but differ in another field (rare: a changed
  description): the highest's stanza, listed as such, not as a conflict;
- no copy changed a package (or none is known to: no parent and no file list), the fallback:
  every copy that has the package says, and they agree or are a conflict as above.

apk's `etc/apk/world` (the packages asked for: without them a later `apk add` removes the
packages of the other layers) is merged the same way, a dependency a package, written sorted one
a line as apk does; its disagreements are not reported (the installed database's are).

A layer that deletes a database (a whiteout of it or of a directory above it, an opaque
directory over it, or something not a file in its place) hides the copies below it: they are
not merged, and a note says so; with no copy above it the stack shows none, and none is merged.

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
import posixpath
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import IO, Optional, Sequence

from lamina.errors import InvalidSource, SpecError
from lamina.image import Layer

DPKG_STATUS = "var/lib/dpkg/status"
APK_INSTALLED = "lib/apk/db/installed"
APK_WORLD = "etc/apk/world"
MERGEABLE = {DPKG_STATUS: "dpkg", APK_INSTALLED: "apk", APK_WORLD: "apk"}
RPM_GLOBS = ("var/lib/rpm/*", "usr/lib/sysimage/rpm/*")
STATUS_D = "var/lib/dpkg/status.d/"
DPKG_INFO = "var/lib/dpkg/info/"
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
    multi_arch: str = ""  # dpkg's Multi-Arch field, lowercased

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the package in a database: its name, and its architecture only for a
        dpkg `Multi-Arch: same` package (the one kind dpkg installs once per architecture)."""
        return self.name, (self.architecture if self.multi_arch == "same" else "")

    @property
    def order(self) -> tuple[str, str]:
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
                          fields.get("status", ""), b"\n".join(lines), fields.get("multi-arch", "").lower()))
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


def parse_world(data: bytes, what: str) -> list[Stanza]:
    """apk's `world`: the packages asked for, one dependency (`name`, `name=1.2-r0`, ...) a word."""
    words = sorted(set(data.decode("utf-8", "replace").split()))
    return [Stanza(w, "", "", "", w.encode()) for w in words]


def serialize_world(stanzas: Sequence[Stanza]) -> bytes:
    """apk's `world`, one dependency a line, sorted (as apk writes it)."""
    return b"".join(s.text + b"\n" for s in sorted(stanzas, key=lambda s: s.text))


PARSERS = {"dpkg": parse_dpkg, "apk": parse_apk}
PATH_PARSERS = {DPKG_STATUS: parse_dpkg, APK_INSTALLED: parse_apk, APK_WORLD: parse_world}


def serialize(stanzas: Sequence[Stanza]) -> bytes:
    """A database of `stanzas`, sorted by name then architecture, each ended by a blank line."""
    return b"".join(s.text + b"\n\n" for s in sorted(stanzas, key=lambda s: s.order))


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
    lists: frozenset[str] = frozenset()  # X of the var/lib/dpkg/info/X.list files it writes ("name" or "name:arch")
    deleted: frozenset[str] = frozenset()  # mergeable paths it deletes (a whiteout, an opaque directory, a non-file)
    os_release: tuple[tuple[str, bytes], ...] = ()  # (path, content) of the os-release files it writes
    status_d_copies: tuple[tuple[str, bytes], ...] = ()  # (path, content) of its status.d/ stanza files

    def installed(self, stanza: Stanza) -> bool:
        """Whether this layer (re)installed the dpkg package of `stanza`: it writes its file list."""
        return stanza.name in self.lists or f"{stanza.name}:{stanza.architecture}" in self.lists


def deletes(path: str) -> frozenset[str]:
    """The mergeable paths that a whiteout or opaque marker at `path` deletes below it."""
    base = posixpath.basename(path)
    if base == ".wh..wh..opq":
        d = posixpath.dirname(path)
        return frozenset(m for m in MERGEABLE if not d or m.startswith(d + "/"))
    if base.startswith(".wh."):
        target = posixpath.join(posixpath.dirname(path), base[len(".wh."):])
        return frozenset(m for m in MERGEABLE if m == target or m.startswith(target + "/"))
    return frozenset()


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
    lists: set[str] = set()
    deleted: set[str] = set()
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
        if e.path in MERGEABLE:
            if content is not None:
                copies[e.path] = content
            else:
                copies.pop(e.path, None)  # no longer a file there (a later entry replaced it)
                deleted.add(e.path)
        deleted |= deletes(e.path)
        for is_one, found in ((OS_RELEASE.__contains__, os_release), (is_status_d_stanzas, status_d_copies)):
            if is_one(e.path):
                if content is not None:
                    found[e.path] = content
                else:
                    found.pop(e.path, None)  # no longer a file there (a later entry replaced it)
        rpm = rpm or is_rpm_database(e.path)
        status_d = status_d or e.path.startswith(STATUS_D)
        info = e.path[len(DPKG_INFO):] if e.path.startswith(DPKG_INFO) else ""
        if e.kind == "file" and info.endswith(".list") and "/" not in info:
            lists.add(info[:-len(".list")])
    return LayerDatabases(tuple(sorted(copies.items())), rpm, status_d, lists=frozenset(lists),
                          deleted=frozenset(deleted - set(copies)), os_release=tuple(sorted(os_release.items())),
                          status_d_copies=tuple(sorted(status_d_copies.items()))), headers


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


Entry = tuple  # a copy's stanzas of one key (one, unless the copy itself lists it more than once)


def _vote(entry: Optional[Entry], with_status: bool = True, with_arch: bool = True) -> str:
    """What a copy says of a package: "removed", or its version (and dpkg Status and Architecture)."""
    if not entry:
        return "removed"
    return " + ".join(f"version {s.version}" + (f", Status {s.status}" if s.status and with_status else "")
                      + (f", Architecture {s.architecture}" if s.architecture and with_arch else "") for s in entry)


def _texts(entry: Optional[Entry]) -> tuple[bytes, ...]:
    return tuple(s.text for s in entry) if entry else ()


def _entries(stanzas: Sequence[Stanza]) -> dict[tuple[str, str], Entry]:
    out: dict[tuple[str, str], list[Stanza]] = {}
    for s in stanzas:
        out.setdefault(s.key, []).append(s)
    return {k: tuple(v) for k, v in out.items()}


def _merge_one(tool: str, path: str, copies: Sequence[tuple[StackLayer, list[Stanza]]]
               ) -> tuple[list[Stanza], list[Conflict], list[str]]:
    """The merged stanzas of one database path; `copies` are every layer's copy, base first.

    A three-way merge, package by package (see the module's docstring): each copy is compared
    with its parent (the highest copy it superseded); a change that a copy built on it changed
    again is overridden; only the changes left vote."""
    by_layer = [(l, _entries(stanzas)) for l, stanzas in copies]
    n = len(by_layer)
    over = [[j for j in range(n) if j != i and by_layer[j][0].supersedes(by_layer[i][0])] for i in range(n)]
    parents: list[Optional[int]] = []
    for i, (layer, _) in enumerate(by_layer):
        below = [j for j in range(n) if j != i and layer.supersedes(by_layer[j][0])]
        parents.append(max(below, key=lambda j: by_layer[j][0].position) if below else None)
    effective = [i for i in range(n) if not over[i]]
    keys = sorted({k for _, d in by_layer for k in d})
    chosen: list[tuple[tuple[str, str], Entry, StackLayer]] = []
    conflicts, differing = [], []
    for key in keys:
        changes: dict[int, Optional[Entry]] = {}  # copy -> what it changed the package to (None: removed it)
        for i, (layer, have) in enumerate(by_layer):
            mine, parent = have.get(key), parents[i]
            if parent is not None:
                if _texts(mine) != _texts(by_layer[parent][1].get(key)):
                    changes[i] = mine
            elif mine is not None and tool == "dpkg" and any(layer.databases.installed(s) for s in mine):
                changes[i] = mine  # nothing it superseded is here: its layer's file list says it installed it
        # a change counts unless a copy built on it changed the package again
        changed = [(by_layer[i][0], e) for i, e in changes.items() if not any(j in changes for j in over[i])]
        # no copy changed it (or none is known to): every unsuperseded copy that has it says
        inherited = [(by_layer[i][0], by_layer[i][1][key]) for i in effective if key in by_layer[i][1]]
        votes = changed or inherited
        if not any(e is not None for _, e in votes):
            continue
        top_layer, top = votes[-1]  # the highest say: its layer's files of the package are the ones shown
        if all(e is not None and _texts(e) == _texts(top) for _, e in votes):
            chosen.append((key, top, top_layer))  # type: ignore[arg-type]
            continue
        if len({_vote(e) for _, e in votes}) > 1:
            given = [s for _, e in votes if e is not None for s in e]  # Status and Architecture named where they differ
            statuses, archs = len({s.status for s in given}) > 1, len({s.architecture for s in given}) > 1
            name = given[0].name if archs else given[0].describe()
            conflicts.append(Conflict(tool, path, name, tuple((_vote(e, statuses, archs), l.name) for l, e in votes),
                                      top_layer.name))
        elif top is not None:
            differing.append(top[0].describe())
        if top is not None:
            chosen.append((key, top, top_layer))
    # one instance of a package, unless each is Multi-Arch: same (dpkg installs those once per architecture)
    out: list[Stanza] = []
    names: dict[str, list[tuple[tuple[str, str], Entry, StackLayer]]] = {}
    for c in chosen:
        names.setdefault(c[0][0], []).append(c)
    for name, group in names.items():
        if len(group) > 1 and not all(s.multi_arch == "same" for _, e, _ in group for s in e):
            top_position = max(l.position for _, _, l in group)
            taken = next(l for _, _, l in group if l.position == top_position)
            conflicts.append(Conflict(tool, path, name, tuple(
                (f"version {s.version}, Architecture {s.architecture}", l.name) for _, e, l in group for s in e),
                taken.name))
            group = [g for g in group if g[2].position == top_position]
        out += [s for _, e, _ in group for s in e]
    return out, conflicts, differing


def plan(stack: Sequence[StackLayer]) -> MergePlan:
    """What the merge layer of `stack` (base first) must hold: a database for each mergeable path
    that two or more unsuperseded copies write, when their merge is not what the stack shows."""
    merged, conflicts, differing, notes = [], [], [], []
    for path, tool in sorted(MERGEABLE.items()):
        deleting = [l for l in stack if path in l.databases.deleted]
        above = [l for l in stack if not deleting or l.position > deleting[-1].position]
        copies = [(l, PATH_PARSERS[path](c, f"{l.name}")) for l in above for c in (l.copy(path),) if c is not None]
        if deleting:
            lower = [l.name for l in stack if l.position < deleting[-1].position and l.copy(path) is not None]
            if lower:
                shown = "the stack shows none" if not copies else "only the copies above it count"
                notes.append(f"/{path} is deleted by {deleting[-1].name}: its copies below ({', '.join(lower)}) "
                             f"are not merged; {shown}")
        if len(copies) < 2:
            continue
        effective = [l for l, _ in copies if not any(o.supersedes(l) for o, _ in copies if o is not l)]
        if len(effective) < 2:
            continue
        stanzas, found, diff = _merge_one(tool, path, copies)
        content = serialize(stanzas)
        if path == APK_WORLD:
            # the packages asked for follow the installed database, whose conflicts are reported
            content, found, diff = serialize_world(stanzas), [], []
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
    return any(p in MERGEABLE or p in OS_RELEASE or is_rpm_database(p) or p.startswith(STATUS_D) or deletes(p)
               for p in paths)


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
