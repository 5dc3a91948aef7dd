"""Tests of the composition checks: conflicts and what is not one, policies, replacements, foreign whiteouts."""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping, Sequence

import pytest

from lamina.analyze.check import check, package_database
from lamina.analyze.index import IndexEntry, LayerIndex
from lamina.analyze.report import Policy, Report
from lamina.errors import SpecError
from lamina_testing.images import FakeImage, FakeLayer, FileValue
from lamina_testing.stacks import indexes

BASE = FakeLayer({"etc/": None, "etc/passwd": b"root\n", "bin/": None, "bin/echo": b"echo", "bin/cat": b"cat"},
                 "ADD rootfs /")
OTHER_BASE = FakeLayer({"bin/": None, "bin/echo": b"another echo"}, "ADD other /")


def _on(base: FakeLayer, files: Mapping[str, FileValue], created_by: str = "RUN x") -> FakeImage:
    return FakeImage([base, FakeLayer(dict(files), created_by)])


def _stack(*parts: tuple[FakeImage, str, Sequence[int]]) -> tuple[LayerIndex, ...]:
    return tuple(i for image, name, picks in parts for i in indexes(image, name, picks))


def _composed(a: Mapping[str, FileValue], b: Mapping[str, FileValue], policy: Policy = Policy()) -> Report:
    """base + A's top layer + B's top layer, A and B each built on base."""
    base = FakeImage([BASE])
    return check(_stack((base, "base", [0]), (_on(BASE, a), "a", [1]), (_on(BASE, b), "b", [1])), policy)


DPKG = {"var/": None, "var/lib/": None, "var/lib/dpkg/": None}


def test_two_layers_writing_the_same_file_differently_conflict_and_the_top_wins() -> None:
    report = _composed({**DPKG, "var/lib/dpkg/status": b"Package: a\n"}, {**DPKG, "var/lib/dpkg/status": b"Package: b\n"})
    (finding,) = report.of_kind("conflict")
    assert (finding.paths, finding.layers, finding.winner, finding.severity) == (("var/lib/dpkg/status",), (1, 2), 2, "warning")
    assert finding.message.startswith("/var/lib/dpkg/status differs (content) between [1] a layer 1 (sha256:")
    assert "[2] b layer 1 (sha256:" in finding.message and "the top one, [2], wins" in finding.message
    assert ("var/lib/dpkg/status is a package database (dpkg): the top layer's copy hides the packages the "
            "others installed; rebuild the layers on a common base or merge the databases") in finding.message
    assert report.errors == ()


def test_same_content_does_not_conflict_and_directories_merge() -> None:
    report = _composed({**DPKG, "var/lib/dpkg/status": b"same"}, {"var/": None, "var/lib/": None, "var/lib/dpkg/": None,
                                                                 "var/lib/dpkg/status": b"same"})
    assert report.findings == ()


@pytest.mark.parametrize("a, b, what", [
    ({"x": b"1"}, {"x": b"2"}, "content"),
    ({"x": "->one"}, {"x": "->two"}, "symlink target"),
    ({"x/": None}, {"x": b"file"}, "type clash: a directory vs a file"),
    ({"x": b"file"}, {"x/": None}, "type clash: a file vs a directory"),
], ids=["content", "symlink", "dir-then-file", "file-then-dir"])
def test_what_differs_is_named(a: Mapping[str, FileValue], b: Mapping[str, FileValue], what: str) -> None:
    (finding,) = _composed(a, b).of_kind("conflict")
    assert f"/x differs ({what}) between" in finding.message


def test_mode_and_owner_differences_conflict() -> None:
    stack = list(_stack((FakeImage([BASE]), "base", [0]), (_on(BASE, {"x": b"1"}), "a", [1]), (_on(BASE, {"x": b"1"}), "b", [1])))
    top = stack[2]
    entries = tuple(replace(e, mode=0o600, uid=7) if e.path == "x" else e for e in top.entries)
    stack[2] = replace(top, entries=entries)
    (finding,) = check(stack).of_kind("conflict")
    assert "(mode 0755 vs 0600, owner 0:0 vs 7:0)" in finding.message


def test_overriding_what_a_layer_was_built_on_is_no_conflict() -> None:
    image = FakeImage([BASE, FakeLayer({"etc/": None, "etc/passwd": b"root\nuser\n"}),
                       FakeLayer({"etc/": None, "etc/passwd": b"root\nuser\nmore\n"})])
    assert check(indexes(image, "img")).findings == ()


def test_a_layer_built_on_another_base_conflicts_with_this_base() -> None:
    layer = _on(OTHER_BASE, {"etc/": None, "etc/passwd": b"mine\n"})
    (finding,) = check(_stack((FakeImage([BASE]), "base", [0]), (layer, "x", [1]))).of_kind("conflict")
    assert finding.paths == ("etc/passwd",) and finding.layers == (0, 1)


def test_a_conflict_removed_again_higher_up_is_not_reported() -> None:
    stack = _stack((FakeImage([BASE]), "base", [0]), (_on(BASE, {"x": b"1"}), "a", [1]),
                   (_on(BASE, {"x": b"2"}), "b", [1]))
    remover = FakeImage([BASE, FakeLayer({"x": b"2"}), FakeLayer({".wh.x": b""})])
    # The remover's top layer was built on a layer with the same bytes as b's: it knows it.
    assert check(stack + indexes(remover, "r", [2])).of_kind("conflict") == ()


@pytest.mark.parametrize("path, tool", [
    ("var/lib/dpkg/status", "dpkg"), ("var/lib/dpkg/status.d/libc6", "dpkg"), ("lib/apk/db/installed", "apk"),
    ("etc/apk/world", "apk"),
    ("var/lib/rpm/Packages", "rpm"), ("usr/lib/sysimage/rpm/rpmdb.sqlite", "rpm"), ("/var/lib/dpkg/status", "dpkg"),
    ("var/lib/dpkg/available", None), ("etc/passwd", None),
])
def test_package_databases_are_recognised(path: str, tool: str) -> None:
    assert package_database(path) == tool


def test_policy_error_makes_conflicts_errors_and_ignore_drops_them() -> None:
    a, b = {"x": b"1", "y": b"1"}, {"x": b"2", "y": b"2"}
    report = _composed(a, b, Policy(on_conflict="error"))
    assert [f.severity for f in report.findings] == ["error", "error"]
    first, second = (f.message for f in report.findings)
    assert report.error_summary() == f"composition check failed: 2 conflicts:\n  error: {first}\n  error: {second}"
    assert _composed(a, b, Policy(on_conflict="ignore")).findings == ()


@pytest.mark.parametrize("glob", ["x", "/x", "*", "/?"])
def test_allowed_conflicts_match_with_or_without_a_leading_slash(glob: str) -> None:
    assert _composed({"x": b"1"}, {"x": b"2"}, Policy(allowed_conflicts=(glob,))).findings == ()


def test_a_bad_policy_is_refused() -> None:
    with pytest.raises(SpecError, match="on_conflict 'maybe' is not one of warn, error, ignore"):
        Policy(on_conflict="maybe")


def test_a_whiteout_of_content_from_a_layer_not_below_it_is_reported() -> None:
    remover = _on(BASE, {"bin/": None, "bin/.wh.echo": b""}, "RUN rm /bin/echo")
    other = FakeImage([OTHER_BASE])
    report = check(_stack((other, "other", [0]), (remover, "x", [1])))
    (finding,) = report.of_kind("whiteout")
    assert finding.paths == ("bin/echo",) and finding.layers == (0, 1) and finding.severity == "warning"
    assert finding.message.startswith("[1] x layer 1 (sha256:")
    assert "removes /bin/echo, provided by [0] other layer 0 (sha256:" in finding.message
    # On the base it was built on, the same removal is expected.
    assert check(_stack((FakeImage([BASE]), "base", [0]), (remover, "x", [1]))).of_kind("whiteout") == ()


def test_an_opaque_directory_over_foreign_content_is_reported_with_its_paths() -> None:
    lower = FakeImage([FakeLayer({"opt/": None, **{f"opt/f{i}": b"x" for i in range(7)}})])
    opaque = _on(BASE, {"opt/": None, "opt/.wh..wh..opq": b"", "opt/new": b"n"})
    (finding,) = check(_stack((lower, "lower", [0]), (opaque, "o", [1]))).of_kind("whiteout")
    assert len(finding.paths) == 7 and "/opt/f0, /opt/f1, /opt/f2, /opt/f3, /opt/f4 and 2 more" in finding.message


def test_an_error_summary_lists_at_most_twenty_findings() -> None:
    a, b = {f"f{i:02}": b"1" for i in range(23)}, {f"f{i:02}": b"2" for i in range(23)}
    lines = _composed(a, b, Policy(on_conflict="error")).error_summary().splitlines()
    assert lines[0] == "composition check failed: 23 conflicts:"
    assert [l.split()[1] for l in lines[1:21]] == [f"/f{i:02}" for i in range(20)]
    assert lines[21:] == ["  ... and 3 more (see the report)"]


def test_a_hard_link_without_its_target_is_an_error() -> None:
    image = FakeImage([BASE, FakeLayer({"t": b"t"}), FakeLayer({"link": "=>t", "ok": "=>bin/echo"})])
    report = check(indexes(image, "img", [0, 2]))
    (finding,) = report.of_kind("hardlink")
    assert finding.severity == "error" and finding.paths == ("link", "t") and finding.layers == (1,)
    assert finding.message.startswith("hard link /link in [1] img layer 2 (sha256:")
    assert "points to /t, which is neither in that layer nor in a layer below it in this stack" in finding.message
    assert report.error_summary().startswith("composition check failed: 1 broken hard link")
    assert check(indexes(image, "img")).of_kind("hardlink") == ()


def test_the_text_report_groups_findings_one_line_each() -> None:
    report = _composed({"x": b"1", "y": b"1"}, {"x": b"2", "bin/": None, "bin/.wh.cat": b""})
    lines = report.text().splitlines()
    assert lines[0] == "stack (3 layers, base first):"
    assert lines[1].startswith("  [0] base layer 0 sha256:") and lines[1].endswith("ADD rootfs /")
    assert lines[4:] == [
        "conflicts (1):",
        "  " + report.of_kind("conflict")[0].severity + ": " + report.of_kind("conflict")[0].message,
        "replaced symlinks and directories: none",
        "whiteouts: none",  # b was built on base: removing its cat is expected
        "hard links: none",
        "missing libraries: none",
        "script interpreters: none",  # no start command group: the check had no image config
    ]
    doc = report.to_json()
    assert doc["counts"] == {"conflict": 1, "replacement": 0, "whiteout": 0, "hardlink": 0, "missing-library": 0,
                             "interpreter": 0, "start": 0}
    assert doc["stack"][2]["source"] == "b" and doc["findings"][0]["winner"] == 2 and doc["errors"] == 0


USR_MERGED = FakeLayer({"usr/": None, "usr/lib/": None, "usr/lib/libc.so.6": b"libc", "lib": "->usr/lib",
                        "usr/bin/": None, "usr/bin/sh": b"sh", "bin": "->usr/bin"}, "ADD rootfs /")


def test_a_foreign_layer_replacing_a_lower_symlink_with_a_directory_is_reported_naming_both_layers() -> None:
    other = _on(FakeLayer({"lib/": None}), {"lib/": None, "lib/libfoo.so": b"foo"})
    report = check(_stack((FakeImage([USR_MERGED]), "debian", [0]), (other, "other", [1])))
    (finding,) = report.of_kind("replacement")
    assert (finding.paths, finding.layers, finding.severity) == (("lib",), (0, 1), "warning")
    assert finding.message.startswith("[1] other layer 1 (sha256:")
    assert "replaces the symlink /lib -> usr/lib of [0] debian layer 0 (sha256:" in finding.message
    assert "with a directory: what the symlink led to is no longer found at /lib" in finding.message
    assert report.of_kind("conflict") == ()  # reported once, as what it is
    strict = check(_stack((FakeImage([USR_MERGED]), "debian", [0]), (other, "other", [1])), Policy("error"))
    assert strict.errors == (replace(finding, severity="error"),)  # graded like a conflict


def test_a_layer_built_on_the_symlink_may_replace_it() -> None:
    image = FakeImage([USR_MERGED, FakeLayer({"bin/": None, "bin/x": b"x"})])
    assert check(indexes(image, "img")).of_kind("replacement") == ()


def _layer(index: int, source: str, entries: Sequence[IndexEntry], on_top: bool = False) -> LayerIndex:
    digest = f"sha256:{index:064x}"
    return LayerIndex(source, index, digest, digest, "", 0, "", "linux/amd64", (), (), tuple(entries), on_top=on_top)


def test_a_files_layer_changing_a_lower_directorys_mode_or_owner_is_reported() -> None:
    base = _layer(0, "base", [IndexEntry("tmp", "dir", 0o1777, 0, 0), IndexEntry("home", "dir", 0o755, 0, 0),
                              IndexEntry("home/app", "dir", 0o755, 1000, 1000), IndexEntry("bin", "symlink", 0o777, 0, 0,
                                                                                           linkname="usr/bin")])
    files = _layer(-1, "files of //app:img", [
        IndexEntry("bin", "dir", 0o755, 0, 0), IndexEntry("bin/tool", "file", 0o755, 0, 0),
        IndexEntry("home", "dir", 0o755, 0, 0), IndexEntry("home/app", "dir", 0o755, 0, 0),
        IndexEntry("home/app/f", "file", 0o644, 0, 0),
        IndexEntry("tmp", "dir", 0o755, 0, 0), IndexEntry("tmp/f", "file", 0o644, 0, 0)], on_top=True)
    found = {f.paths[0]: f.message for f in check((base, files)).of_kind("replacement")}
    assert sorted(found) == ["bin", "home/app", "tmp"]
    assert "changes directory /tmp of [0] base layer 0 (sha256:" in found["tmp"]
    assert "mode 1777 to 0755" in found["tmp"] and "owner 1000:1000 to 0:0" in found["home/app"]
    assert "replaces the symlink /bin -> usr/bin" in found["bin"]
    assert found["tmp"].startswith("[1] files of //app:img (sha256:")
