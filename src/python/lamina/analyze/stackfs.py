"""The filesystem a stack of layer indexes makes (OCI whiteout semantics), and the events on the way there."""
from __future__ import annotations

import posixpath
from collections import deque
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from lamina.analyze.index import IndexEntry, LayerIndex

SYMLINK_HOPS = 40  # as the kernel's MAXSYMLINKS


@dataclass(frozen=True)
class Node:
    """A path of the final filesystem and the stack position of the layer that provided it."""

    path: str
    layer: int
    entry: IndexEntry  # as its layer lists it (a hard link keeps kind 'hardlink')
    target: Optional[IndexEntry] = None  # a hard link's target entry, when it was found

    @property
    def facts(self) -> IndexEntry:
        """The entry that describes the content: a hard link's target, else the entry itself."""
        return self.target if self.target is not None else self.entry

    @property
    def kind(self) -> str:
        return self.facts.kind

    def signature(self) -> tuple:
        """What two layers must agree on for a path to count as the same content."""
        f = self.facts
        if f.kind == "file":
            return ("file", f.sha256, f.mode, f.uid, f.gid)
        if f.kind == "symlink":
            return ("symlink", f.linkname, f.uid, f.gid)
        if f.kind == "hardlink":  # target unknown
            return ("hardlink", f.linkname)
        return (f.kind, f.mode, f.uid, f.gid)


@dataclass(frozen=True)
class Override:
    """An upper layer's entry replacing different content a lower layer provided at the same path."""

    path: str
    lower: Node
    upper: Node


@dataclass(frozen=True)
class Removal:
    """A path a whiteout or opaque marker removed."""

    node: Node
    layer: int  # the stack position of the marker's layer
    marker: str


@dataclass(frozen=True)
class BrokenLink:
    path: str
    target: str
    layer: int
    reason: str  # "missing" or "directory"


@dataclass(frozen=True)
class FileSystem:
    """The final filesystem: every path (whiteout markers never appear) and the stack it came from."""

    stack: tuple[LayerIndex, ...]
    nodes: Mapping[str, Node] = field(repr=False)

    def get(self, path: str) -> Optional[Node]:
        return self.nodes.get(path.strip("/"))

    def stat(self, path: str) -> Optional[tuple[str, int, int, int]]:
        """(kind, mode, uid, gid) of what is at `path` itself (no symlink followed); None if nothing."""
        node = self.nodes.get(path.strip("/"))
        if node is None:
            return None
        f = node.facts
        return node.kind, f.mode, f.uid, f.gid

    def resolve(self, path: str) -> Optional[Node]:
        """The node `path` leads to, following symlinks in every component; None if it leads nowhere."""
        real, found = _walk(self.nodes, path)
        return self.nodes.get(real) if found and real else None

    def real_path(self, path: str) -> str:
        """`path` with every symlink in it followed, as far as the filesystem has it (a missing
        part and what follows it are kept as written): where the kernel would look for it."""
        return _walk(self.nodes, path)[0]

    def place(self, path: str) -> str:
        """Where an entry named `path` lands when a layer holding it is unpacked on this
        filesystem: its parent directory with the symlinks in it followed, its own name kept (as
        Docker and containerd unpack layers, and as a Dockerfile's COPY writes)."""
        return _place(self.nodes, path)

    def text(self, path: str) -> Optional[str]:
        """The captured text of a small config file, from the layer that provided it."""
        node = self.resolve(path)
        if node is None or node.entry.kind != "file":
            return None
        return dict(self.stack[node.layer].texts).get(node.entry.path)  # as its layer names it


def _walk(nodes: Mapping[str, Node], path: str) -> tuple[str, bool]:
    """(`path` with its symlinks followed, whether every part of it exists). Stays inside the
    root ('..' at the root is the root); a part that is missing, or not a directory where one is
    needed, ends the walk and the rest is kept as written; a symlink loop keeps the path as written."""
    parts = deque(p for p in path.split("/") if p and p != ".")
    current = ""
    hops = 0
    while parts:
        name = parts.popleft()
        if name == "..":
            current = posixpath.dirname(current)
            continue
        candidate = posixpath.join(current, name) if current else name
        node = nodes.get(candidate)
        if node is not None and node.kind == "symlink":
            hops += 1
            if hops > SYMLINK_HOPS:
                return "/".join(p for p in path.split("/") if p and p != "."), False
            link = node.entry.linkname
            if link.startswith("/"):
                current = ""
            parts.extendleft(reversed([p for p in link.split("/") if p and p != "."]))
            continue
        if node is None or (parts and node.kind != "dir"):
            rest = posixpath.normpath("/".join([candidate, *parts])).lstrip("/")
            return ("" if rest == "." else rest), False
        current = candidate
    return current, True


def _place(nodes: Mapping[str, Node], path: str) -> str:
    parent, name = posixpath.split(path)
    if not parent:
        return path
    node = nodes.get(parent)
    if node is not None and node.kind == "dir":
        return path  # no symlink on the way: every path in the tree is a real one
    real = _walk(nodes, parent)[0]
    return posixpath.join(real, name) if real else name


@dataclass(frozen=True)
class Applied:
    fs: FileSystem
    overrides: tuple[Override, ...]
    removals: tuple[Removal, ...]
    broken_links: tuple[BrokenLink, ...]


class _Tree:
    """The mutable tree apply() builds: nodes by path, and each directory's children for subtree removal."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.children: dict[str, set[str]] = {}

    def put(self, node: Node) -> None:
        self.nodes[node.path] = node
        self.children.setdefault(posixpath.dirname(node.path), set()).add(node.path)

    def remove(self, path: str, removed: list[Node]) -> None:
        node = self.nodes.pop(path, None)
        if node is not None:
            removed.append(node)
            self.children.get(posixpath.dirname(path), set()).discard(path)
        self.clear(path, removed)

    def clear(self, path: str, removed: list[Node]) -> None:
        """Removes everything under `path`, keeping `path` itself."""
        stack = list(self.children.pop(path, ()))
        while stack:
            child = stack.pop()
            node = self.nodes.pop(child, None)
            if node is not None:
                removed.append(node)
            stack.extend(self.children.pop(child, ()))


def _implicit_dir(path: str, layer: int) -> Node:
    return Node(path, layer, IndexEntry(path, "dir", 0o755, 0, 0))


def apply(stack: Sequence[LayerIndex]) -> Applied:
    """Apply the layers base first: each layer's markers remove lower content, then its entries land."""
    tree = _Tree()
    overrides: list[Override] = []
    removals: list[Removal] = []
    broken: list[BrokenLink] = []
    for pos, layer in enumerate(stack):
        own = set()
        for e in layer.entries:
            if e.is_whiteout:
                removed: list[Node] = []
                landed = _place(tree.nodes, e.path)  # the marker's directory, symlinks followed
                if e.is_opaque:
                    tree.clear(posixpath.dirname(landed), removed)
                else:
                    tree.remove(posixpath.join(posixpath.dirname(landed), posixpath.basename(e.whiteout_target)),
                                removed)
                removals.extend(Removal(n, pos, e.path) for n in removed if n.layer != pos)
            else:
                own.add(e.path)
        for e in layer.entries:
            if e.is_whiteout:
                continue
            path = _place(tree.nodes, e.path)
            _ensure_parents(tree, path, pos, overrides)
            target = None
            if e.kind == "hardlink":
                found = tree.nodes.get(_place(tree.nodes, e.linkname))
                if found is not None and found.kind == "dir":
                    broken.append(BrokenLink(e.path, e.linkname, pos, "directory"))
                elif found is None and e.linkname not in own:
                    broken.append(BrokenLink(e.path, e.linkname, pos, "missing"))
                elif found is not None:
                    target = found.facts
            node = Node(path, pos, e, target)
            existing = tree.nodes.get(path)
            # (Directories merge, and the upper one's mode and owner win: that too is an override.)
            if existing is not None and existing.layer != pos and existing.signature() != node.signature():
                overrides.append(Override(path, existing, node))
            if existing is not None and existing.kind == "dir" and node.kind != "dir":
                tree.clear(path, [])  # a non-directory replaces a directory and all it held
            tree.put(node)
    return Applied(FileSystem(tuple(stack), tree.nodes), tuple(overrides), tuple(removals), tuple(broken))


def _ensure_parents(tree: _Tree, path: str, pos: int, overrides: list[Override]) -> None:
    parent = posixpath.dirname(path)
    missing = []
    while parent:
        node = tree.nodes.get(parent)
        if node is not None and node.kind == "dir":
            break
        missing.append(parent)
        parent = posixpath.dirname(parent)
    for p in reversed(missing):
        node = tree.nodes.get(p)
        implicit = _implicit_dir(p, pos)
        if node is not None:  # a non-directory where this layer has a directory
            if node.layer != pos:
                overrides.append(Override(p, node, implicit))
        tree.put(implicit)
