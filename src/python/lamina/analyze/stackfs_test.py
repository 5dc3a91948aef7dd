"""Tests of the stacked filesystem: whiteouts, opaque markers, merges, replacements, symlinks, hard links."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from lamina.analyze.index import IndexEntry, LayerIndex
from lamina.analyze.stackfs import Applied, apply
from lamina_testing.images import FakeImage, FakeLayer, FileValue
from lamina_testing.stacks import indexes


def _apply(*layers: Mapping[str, FileValue]) -> Applied:
    """The layers as one source image (each built on the ones before it)."""
    return apply(indexes(FakeImage([FakeLayer(dict(l)) for l in layers]), "img"))


def _paths(applied: Applied) -> list[str]:
    return sorted(applied.fs.nodes)


def test_a_whiteout_removes_the_path_and_its_subtree_and_never_appears() -> None:
    applied = _apply(
        {"a/": None, "a/b/": None, "a/b/c": b"c", "a/d": b"d", "keep": b"k"},
        {"a/.wh.b": b"", ".wh.keep-not-there": b""},
    )
    assert _paths(applied) == ["a", "a/d", "keep"]
    assert sorted(r.node.path for r in applied.removals) == ["a/b", "a/b/c"]
    assert all(r.layer == 1 and r.marker == "a/.wh.b" for r in applied.removals)


def test_an_opaque_marker_hides_lower_content_but_not_its_own_layers() -> None:
    applied = _apply(
        {"opt/": None, "opt/old": b"old", "opt/sub/": None, "opt/sub/x": b"x"},
        {"opt/": None, "opt/.wh..wh..opq": b"", "opt/new": b"new"},
    )
    assert _paths(applied) == ["opt", "opt/new"]
    assert applied.fs.nodes["opt"].layer == 1


def test_a_whiteout_does_not_remove_its_own_layers_entry() -> None:
    applied = _apply({"x": b"old"}, {"x": b"new", ".wh.x": b""})
    new = next(e for e in applied.fs.stack[1].entries if e.path == "x")
    assert applied.fs.nodes["x"].entry == new
    assert [(r.node.layer, r.node.path) for r in applied.removals] == [(0, "x")]  # only the lower one


def test_directories_merge_and_a_file_replacing_a_directory_takes_its_subtree() -> None:
    applied = _apply(
        {"d/": None, "d/x": b"x", "e/": None, "e/y": b"y"},
        {"d/": None, "d/z": b"z", "e": b"now a file"},
    )
    assert _paths(applied) == ["d", "d/x", "d/z", "e"]
    (override,) = applied.overrides
    assert (override.path, override.lower.kind, override.upper.kind) == ("e", "dir", "file")


def test_implied_parents_follow_a_lower_symlink_as_an_unpack_does() -> None:
    applied = _apply({"usr/": None, "usr/lib/": None, "lib": "->usr/lib"}, {"lib/x": b"x"})
    assert applied.fs.nodes["lib"].kind == "symlink"
    assert "usr/lib/x" in applied.fs.nodes and "lib/x" not in applied.fs.nodes
    assert applied.fs.resolve("/lib/x") is applied.fs.nodes["usr/lib/x"]
    assert applied.overrides == ()


def test_an_implied_parent_replaces_a_lower_file() -> None:
    applied = _apply({"lib": b"a file"}, {"lib/x": b"x"})
    assert applied.fs.nodes["lib"].kind == "dir" and "lib/x" in applied.fs.nodes
    assert [(o.path, o.lower.kind, o.upper.kind) for o in applied.overrides] == [("lib", "file", "dir")]


def test_a_directory_entry_replaces_a_lower_symlink_and_what_follows_lands_in_it() -> None:
    applied = _apply({"usr/": None, "usr/bin/": None, "usr/bin/sh": b"sh", "bin": "->usr/bin"},
                     {"bin/": None, "bin/tool": b"t"})
    assert applied.fs.nodes["bin"].kind == "dir" and "bin/tool" in applied.fs.nodes
    assert "usr/bin/tool" not in applied.fs.nodes
    assert applied.fs.resolve("/bin/sh") is None  # what the symlink led to is gone from /bin
    assert [(o.path, o.lower.kind, o.upper.kind) for o in applied.overrides] == [("bin", "symlink", "dir")]


def test_a_whiteout_under_a_symlinked_directory_removes_the_real_path() -> None:
    applied = _apply({"usr/": None, "usr/bin/": None, "usr/bin/old": b"o", "bin": "->usr/bin"},
                     {"bin/.wh.old": b""})
    assert "usr/bin/old" not in applied.fs.nodes
    assert [r.node.path for r in applied.removals] == ["usr/bin/old"]


def test_place_follows_symlinks_in_the_parent_only() -> None:
    fs = _apply({"usr/": None, "usr/bin/": None, "bin": "->usr/bin", "usr/bin/sh": "->dash",
                 "abs": "->/usr", "loop": "->loop"}).fs
    assert fs.place("bin/sh") == "usr/bin/sh"
    assert fs.place("bin/new/deeper") == "usr/bin/new/deeper"
    assert fs.place("abs/bin/x") == "usr/bin/x"
    assert fs.place("bin") == "bin"
    assert fs.place("loop/x") == "loop/x"
    assert fs.real_path("bin/sh") == "usr/bin/dash"


def _dir_layer(index: int, entries: Sequence[IndexEntry], source: str = "img") -> LayerIndex:
    digest = f"sha256:{index:064x}"
    return LayerIndex(source, index, digest, digest, "", 0, "", "linux/amd64", (), (), tuple(entries))


def test_a_directory_whose_mode_or_owner_changes_is_an_override() -> None:
    lower = _dir_layer(0, [IndexEntry("tmp", "dir", 0o1777, 0, 0), IndexEntry("home", "dir", 0o755, 0, 0),
                           IndexEntry("home/app", "dir", 0o750, 1000, 1000)])
    upper = _dir_layer(1, [IndexEntry("tmp", "dir", 0o755, 0, 0), IndexEntry("home", "dir", 0o755, 0, 0),
                           IndexEntry("home/app", "dir", 0o750, 0, 0), IndexEntry("home/app/f", "file", 0o644, 0, 0)])
    applied = apply((lower, upper))
    assert [(o.path, o.lower.entry.mode, o.upper.entry.mode) for o in applied.overrides] == [
        ("tmp", 0o1777, 0o755), ("home/app", 0o750, 0o750)]
    assert applied.fs.nodes["tmp"].entry.mode == 0o755  # the upper one's mode wins


def test_identical_content_is_not_an_override() -> None:
    applied = _apply({"a": b"same"}, {"a": b"same"}, {"a": b"other"})
    assert [(o.lower.layer, o.upper.layer) for o in applied.overrides] == [(1, 2)]


def _resolved(files: Mapping[str, FileValue], path: str) -> Optional[str]:
    node = _apply(files).fs.resolve(path)
    return None if node is None else node.path


def test_resolve_follows_symlinks_in_every_component() -> None:
    files = {
        "usr/": None, "usr/lib/": None, "usr/lib/libz.so.1.2": b"z",
        "usr/lib/libz.so.1": "->libz.so.1.2", "usr/lib/libz.so": "->/usr/lib/libz.so.1",
        "lib": "->usr/lib", "loop": "->loop", "dangling": "->nowhere", "up": "->usr/lib/../lib/libz.so",
    }
    assert _resolved(files, "/lib/libz.so") == "usr/lib/libz.so.1.2"
    assert _resolved(files, "lib") == "usr/lib"
    assert _resolved(files, "/up") == "usr/lib/libz.so.1.2"
    assert _resolved(files, "loop") is None
    assert _resolved(files, "dangling") is None
    assert _resolved(files, "usr/lib/libz.so.1.2/x") is None  # a file is not a directory


def test_a_hard_link_takes_its_targets_content() -> None:
    applied = _apply({"bin/": None, "bin/real": b"content"}, {"bin/": None, "bin/link": "=>bin/real"})
    link = applied.fs.nodes["bin/link"]
    assert (link.kind, link.facts.sha256) == ("file", applied.fs.nodes["bin/real"].entry.sha256)
    assert applied.broken_links == ()


def _broken(layers: Sequence[Mapping[str, FileValue]], picks: Sequence[int]) -> list[tuple[str, str, int, str]]:
    stack = indexes(FakeImage([FakeLayer(dict(l)) for l in layers]), "img", picks)
    return [(b.path, b.target, b.layer, b.reason) for b in apply(stack).broken_links]


def test_a_hard_link_needs_its_target_in_its_layer_or_below() -> None:
    layers: list[dict[str, FileValue]] = [
        {"t": b"t", "d/": None}, {"same": b"s", "l1": "=>same", "l2": "=>t", "l3": "=>d", "l4": "=>none"}]
    assert _broken(layers, [0, 1]) == [("l3", "d", 1, "directory"), ("l4", "none", 1, "missing")]
    assert ("l2", "t", 0, "missing") in _broken(layers, [1])  # the layer providing t was left out


def test_a_hard_link_to_a_file_its_own_layer_removed_is_broken() -> None:
    layers: list[dict[str, FileValue]] = [{"t": b"t"}, {".wh.t": b"", "l": "=>t"}]
    assert _broken(layers, [0, 1]) == [("l", "t", 1, "missing")]
