"""Completeness: every dynamic ELF file of the final filesystem finds its interpreter and DT_NEEDED libraries."""
from __future__ import annotations

import fnmatch
import posixpath
import re
from typing import Optional

from lamina.analyze.stackfs import FileSystem, Node
from lamina.analyze.report import Finding, layer_name
from lamina.elf import MACHINES, TRIPLETS, ElfInfo

STANDARD_DIRS = ("lib", "usr/lib", "lib64", "usr/lib64", "usr/local/lib")
_CONF_DEPTH = 8
_SPLIT = re.compile(r"[:,\s]+")


def _conf_dirs(fs: FileSystem) -> list[str]:
    """Directories the image's /etc/ld.so.conf names (following `include` globs), and musl's path files."""
    captured = sorted({p for layer in fs.stack for p, _ in layer.texts})
    out: list[str] = []
    seen: set[str] = set()

    def read(path: str, depth: int) -> None:
        if depth > _CONF_DEPTH or path in seen:
            return
        seen.add(path)
        text = fs.text(path)
        if text is None:
            return
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line or line.startswith("hwcap "):
                continue
            if line.startswith("include ") or line.startswith("include\t"):
                for pattern in line.split()[1:]:
                    full = pattern if pattern.startswith("/") else posixpath.join("/" + posixpath.dirname(path), pattern)
                    glob = full.strip("/")
                    for match in captured:
                        if fnmatch.fnmatchcase(match, glob):
                            read(match, depth + 1)
                continue
            out.extend(d for d in _SPLIT.split(line) if d)

    read("etc/ld.so.conf", 0)
    for path in captured:
        if fnmatch.fnmatchcase(path, "etc/ld-musl-*.path"):
            text = fs.text(path)
            out.extend(d for d in _SPLIT.split(text or "") if d)
    return out


def _expand(entry: str, origin: str, elf: ElfInfo) -> Optional[str]:
    lib = "lib64" if elf.bits == 64 else "lib"
    for token, value in (("${ORIGIN}", origin), ("$ORIGIN", origin), ("${LIB}", lib), ("$LIB", lib)):
        entry = entry.replace(token, value)
    if "$" in entry:  # $PLATFORM and friends: the loader's choice, not knowable here
        return None
    return entry if entry.startswith("/") else None  # relative entries are relative to the process's cwd


def _loadable(node: Optional[Node], elf: ElfInfo) -> bool:
    """A regular file the loader would take for `elf`: not a directory, and built for the same machine."""
    if node is None or node.kind != "file":
        return False
    other = node.facts.elf
    return other is None or (other.bits == elf.bits and other.machine == elf.machine)


def _search_path(node: Node, elf: ElfInfo, system: list[str]) -> list[str]:
    origin = "/" + posixpath.dirname(node.path)
    own = [d for d in (_expand(e, origin, elf) for e in (elf.runpath or elf.rpath)) if d]
    dirs = own + system + [d for t in TRIPLETS.get(elf.machine, ()) for d in (f"/lib/{t}", f"/usr/lib/{t}")]
    if not elf.interp:  # a library: an executable's RPATH may be what finds its neighbours
        dirs.append(origin)
    return dirs


def _missing(fs: FileSystem, node: Node, elf: ElfInfo, system: list[str]) -> list[str]:
    missing = []
    if elf.interp and not _loadable(fs.resolve(elf.interp), elf):
        missing.append(elf.interp)
    dirs = _search_path(node, elf, system)
    for name in elf.needed:
        if "/" in name:
            found = _loadable(fs.resolve(name), elf)
        else:
            found = any(_loadable(fs.resolve(posixpath.join(d, name)), elf) for d in dirs)
        if not found:
            missing.append(name)
    return missing


def _system_dirs(fs: FileSystem) -> list[str]:
    return _conf_dirs(fs) + ["/" + d for d in STANDARD_DIRS]


def unresolved(fs: FileSystem, node: Node) -> list[str]:
    """What one dynamic ELF file needs and `fs` lacks: its interpreter, then its DT_NEEDED names
    ([] for a static or non-ELF file)."""
    elf = node.facts.elf
    if elf is None or not elf.is_dynamic:
        return []
    return _missing(fs, node, elf, _system_dirs(fs))


def missing_libraries(fs: FileSystem) -> list[Finding]:
    """A warning per dynamic ELF executable or library whose interpreter or a DT_NEEDED cannot be found."""
    machines = {MACHINES.get(l.platform.split("/")[1]) for l in fs.stack if l.platform.count("/") >= 1}
    machines.discard(None)
    system = _system_dirs(fs)
    out = []
    for path in sorted(fs.nodes):
        node = fs.nodes[path]
        elf = node.facts.elf
        if elf is None or elf.type not in ("exec", "dyn") or not elf.is_dynamic or node.kind != "file":
            continue
        if machines and elf.machine not in machines:
            continue  # built for another machine (test data, cross toolchains): not loaded here
        missing = _missing(fs, node, elf, system)
        if not missing:
            continue
        libs = [m for m in missing if m != elf.interp]
        parts = []
        if elf.interp in missing:
            parts.append(f"its interpreter {elf.interp} is missing")
        if libs:
            parts.append(f"{', '.join(libs)} not found on its library path")
        where = layer_name(fs.stack, node.layer)
        message = (f"/{path} from {where}: {' and '.join(parts)}; "
                   "add the layer that provides it or drop the binary")
        out.append(Finding("missing-library", "warning", message, (path,), (node.layer,), missing=tuple(missing)))
    return out
